"""Reruns a few tests with JAX's DEFAULT compiler settings (tests/conftest.py forces highest matmul
precision and disables XLA optimisations everywhere else): the Qwen3 parity with transformers,
the compiled-memory analysis and one end-to-end encode -> routed prefill against dense attention.

A subprocess with MSA_TEST_COMPILER=default: `jax_disable_most_optimizations` is not part of
jit's cache key (checked on JAX 0.10 and 0.12), so flipping it inside this process could reuse
executables compiled without optimisations. Tolerances are the ones those tests state: on CPU the
default float32 matmul is full float32 (only TPU/GPU lower it, to bfloat16/TF32 passes), so
XLA's optimisations change only the summation order and the float32 bounds hold unchanged.
"""

import os
import subprocess
import sys

import jax
import pytest

from tests.conftest import COMPILER, REPO

RERUN = [
    "tests/test_default_compiler.py::test_settings_in_effect",
    # one model of the three (GQA 2, untied head, 3 layers): the default compiler's fusions do
    # not depend on which small config; the strict run checks all three
    "tests/convert/test_qwen3_parity.py::test_float32_logits_and_hidden_states[gqa2_untied]",
    "tests/convert/test_qwen3_parity.py::test_bfloat16_agreement",
    "tests/parallel/test_memory_analysis.py",
    "tests/memory/test_memory_invariants.py::"
    "test_topk_covering_every_document_equals_dense_attention",
]
LIMIT_S = 900  # compiling with optimisations on 2 busy cores: measured 86 s (load average 7)


def test_settings_in_effect():
    strict = COMPILER == "strict"
    assert jax.config.values["jax_disable_most_optimizations"] is strict
    assert jax.config.values["jax_default_matmul_precision"] == ("highest" if strict else None)


@pytest.mark.slow
@pytest.mark.single_leg
def test_rerun_with_default_compiler_settings():
    if COMPILER == "default":
        pytest.skip("this is the default-settings run")
    env = dict(os.environ, MSA_TEST_COMPILER="default")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0",
                          "-q", "-rs", *RERUN], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=LIMIT_S)
    tail = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    assert " passed" in run.stdout and "failed" not in run.stdout, tail
