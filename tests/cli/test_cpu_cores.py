"""`msa-jax encode` and `demo` ask JAX for one CPU device per core (common.use_cpu_cores), so
that encoding spreads its blocks over every core; a device count the user chose is kept."""

import os
import subprocess
import sys

PROBE = ("from msa_jax.cli.common import use_cpu_cores; import jax; "
         "took = use_cpu_cores(); print(took, len(jax.devices()), use_cpu_cores())")


def _probe(**env_updates):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env.update(env_updates, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def test_one_cpu_device_per_core_before_jax_starts():
    took, count, _ = _probe()  # (the second call, after JAX started, must not raise)
    assert took == "True" and int(count) == max(1, min(os.cpu_count() or 1, 8))


def test_a_device_count_the_user_chose_is_kept():
    took, count, _ = _probe(XLA_FLAGS="--xla_force_host_platform_device_count=3")
    assert (took, count) == ("False", "3")


def test_encode_and_demo_use_the_cores():
    from msa_jax.cli.main import COMMANDS

    assert {n for n, c in COMMANDS.items() if getattr(c, "USES_CPU_CORES", False)} == \
        {"encode", "demo"}
