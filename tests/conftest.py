"""Shared test setup: float32 matmuls at full precision (MSA_TEST_COMPILER), fake CPU devices,
golden fixtures."""

import os

os.environ.setdefault("MSA_JAX_NO_PROGRESS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import pytest  # noqa: E402

# "strict" (every run): highest matmul precision, XLA optimisations off. "default": JAX's own
# settings, for the few tests tests/test_default_compiler.py reruns in a subprocess (the
# optimisation flag is not part of jit's cache key, so it cannot be flipped inside one process).
COMPILER = os.environ.get("MSA_TEST_COMPILER", "strict")
if COMPILER == "strict":
    jax.config.update("jax_default_matmul_precision", "highest")
    jax.config.update("jax_disable_most_optimizations", True)
elif COMPILER != "default":
    raise ValueError(f"MSA_TEST_COMPILER={COMPILER!r}: expected 'strict' or 'default'")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def golden_root() -> str:
    return os.path.abspath(os.environ.get("MSA_GOLDEN_ROOT",
                                          os.path.join(REPO, "..", "shared", "golden")))


def golden_dirs() -> list[str]:
    """Every fixture folder under ../shared/golden (or $MSA_GOLDEN_ROOT) and in $MSA_GOLDEN_DIRS."""
    root = golden_root()
    found = []
    if os.path.isdir(root):
        found += [os.path.join(root, d) for d in sorted(os.listdir(root))
                  if os.path.exists(os.path.join(root, d, "manifest.json"))]
    for d in filter(None, os.environ.get("MSA_GOLDEN_DIRS", "").split(":")):
        if not os.path.exists(os.path.join(d, "manifest.json")):
            raise FileNotFoundError(f"MSA_GOLDEN_DIRS names {d}, which has no manifest.json")
        found.append(d)
    return [os.path.abspath(d) for d in dict.fromkeys(found)]


def require_golden_dirs() -> list[str]:
    """golden_dirs(), never silently empty: with $CI set, no fixture fails the run naming the
    path, unless MSA_ALLOW_NO_GOLDEN=1 opts out; otherwise (or opted out) the module skips."""
    found = golden_dirs()
    if found:
        return found
    why = (f"no golden fixtures: {golden_root()} is missing or has no fixture folder "
           f"(set MSA_GOLDEN_ROOT or MSA_GOLDEN_DIRS)")
    if os.environ.get("CI") and os.environ.get("MSA_ALLOW_NO_GOLDEN") != "1":
        pytest.fail(f"{why}; CI is set, so this is an error (MSA_ALLOW_NO_GOLDEN=1 skips)",
                    pytrace=False)
    pytest.skip(why, allow_module_level=True)


def pytest_configure(config):
    config.addinivalue_line("markers", "torch: needs torch + transformers (reference parity)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line(
        "markers", "single_leg: a long end-to-end check whose subject does not depend on the JAX "
        "version (a process killed and resumed through the CLI, the default-compiler reruns, a "
        "learning run); `make test` runs it on the Python 3.11 leg only, to keep CI in budget")


# Folders run on the Python 3.11 leg only (single_leg), so the whole CI stays under its 20 minutes
# on 2 cores (21.5 min with both legs running them all): the CLI's subprocess runs, the
# notebooks, the evaluation kit and the data loaders (plain Python and numpy), and - a budget
# trade-off, as their subject does touch JAX's sharding and memory APIs - the memory-bank and
# memory-parallel tests. The 3.12 leg keeps kernels, model, inference, training and the rest.
_SINGLE_LEG_DIRS = ("cli", "colabs", "eval", "data", "memory", "parallel")


# The longest files (measured with --durations on 2 cores), run first: `--dist loadfile` hands
# files to the two workers in collection order, so a long file collected last would leave one
# worker idle for its whole run at the end of the session.
_LONGEST_FIRST = ("training/test_resume.py", "training/test_multiprocess.py",
                  "cli/test_cli_pipeline.py", "parallel/test_parallel_results.py",
                  "test_default_compiler.py", "colabs/test_colabs.py", "cli/test_demo.py",
                  "parallel/test_distributed.py", "memory/test_memory_invariants.py",
                  "convert/test_qwen3_parity.py", "cli/test_cli_writers.py")


def pytest_collection_modifyitems(config, items):
    root = os.path.dirname(os.path.abspath(__file__))
    rank = {}
    for item in items:
        rel = os.path.relpath(str(item.fspath), root).split(os.sep)
        if rel[0] in _SINGLE_LEG_DIRS:
            item.add_marker(pytest.mark.single_leg)
        path = "/".join(rel)
        rank[item.nodeid] = (_LONGEST_FIRST.index(path) if path in _LONGEST_FIRST
                             else len(_LONGEST_FIRST))
    items.sort(key=lambda item: rank[item.nodeid])  # stable: each file keeps its order
