"""Exact resume: N steps straight versus a run SIGKILLed mid-way and resumed from its work
directory give identical parameters, optimiser state and losses, bit for bit (same machine, same
compiled program, same batches: the pipeline maps step -> batch). Library and CLI.

The two tests check one subject (each ~1 min of three subprocess runs): `make test` runs the
CLI one on the Python 3.11 leg (single_leg) and the library one on the 3.12 leg (leg312), so
each JAX/orbax version has one; a plain `pytest tests` runs both."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.cli.conftest import REPO, session_cache_dir
from tests.training.metrics_util import comparable_records

STEPS, KILL_AT = 6, 5


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), e.get("PYTHONPATH")]))
    e["JAX_COMPILATION_CACHE_DIR"] = session_cache_dir(tmp_path_factory)
    e["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    e["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "true"
    e["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    e["MSA_JAX_NO_PROGRESS"] = "1"
    return e


def run(args, env, timeout=600):
    return subprocess.run([sys.executable] + args, env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def raw_state(workdir, step):
    """The checkpointed train state of `step` as numpy leaves (no restore target)."""
    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                               item_names=("state", "meta")) as m:
        tree = m.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    import jax

    return jax.tree_util.tree_flatten_with_path(tree["state"])[0]


def assert_same_state(a, b, step):
    left, right = raw_state(a, step), raw_state(b, step)
    assert [p for p, _ in left] == [p for p, _ in right]
    for (path, x), (_, y) in zip(left, right):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and np.array_equal(x, y), f"{path} differs"


@pytest.mark.leg312
def test_sigkill_then_resume_is_bit_exact(env, tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    script = os.path.join("tests", "training", "resume_run.py")
    r = run([script, straight, str(STEPS)], env)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run([script, killed, str(STEPS), str(KILL_AT)], env)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-2000:])
    r = run([script, killed, str(STEPS)], env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed_from 4" in r.stdout
    assert_same_state(straight, killed, STEPS)
    assert comparable_records(straight) == comparable_records(killed)
    assert [rec["step"] for rec in comparable_records(killed)] == list(range(1, STEPS + 1))


CLI_OVERRIDES = ["--config.data.num_queries=16", "--config.data.docs_per_sample=2",
                 "--config.data.doc_buckets=(2,)", "--config.data.length_buckets=(1024,)",
                 "--config.data.batch_size=2", "--config.eval.every=0",
                 "--config.train.log_every=1", "--config.train.checkpoint_every=2",
                 "--config.optim.warmup.steps=2", "--config.optim.warmup.warmup_steps=1",
                 "--config.optim.main.steps=2", "--config.optim.main.warmup_steps=1",
                 "--noprogress"]


def cli(workdir, env):
    return [sys.executable, "-m", "msa_jax.cli.main", "train",
            "--config=configs/train_tiny.py", f"--workdir={workdir}"] + CLI_OVERRIDES


@pytest.mark.slow
@pytest.mark.single_leg
def test_cli_sigkill_then_resume_is_bit_exact(env, tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    r = subprocess.run(cli(straight, env), env=env, cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    proc = subprocess.Popen(cli(killed, env), env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    ckpt = os.path.join(killed, "checkpoints", "2")
    deadline = time.time() + 600
    while not os.path.isdir(ckpt) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    r = subprocess.run(cli(killed, env), env=env, cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming" in r.stdout
    assert_same_state(straight, killed, 4)  # killed at step 2: resumed into the second phase
    assert comparable_records(straight) == comparable_records(killed)
    with open(os.path.join(killed, "export", "config.json")) as f:
        assert json.load(f)["model_type"] == "msa"
