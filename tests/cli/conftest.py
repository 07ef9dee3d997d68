"""Fixtures for the `msa-jax` CLI tests: a subprocess runner and one demo run whose outputs (tiny
random checkpoints, corpus, queries, memory bank) the end-to-end tests reuse.

The subprocesses share a JAX compilation cache in the test session's temporary folder, so the
tiny models are compiled once per session, not once per command.
"""

import dataclasses
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def session_cache_dir(tmp_path_factory) -> str:
    """One compilation cache for the test run (shared by xdist workers, who all get a basetemp
    below the same folder)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    path = root / "jax-compilation-cache"
    path.mkdir(exist_ok=True)
    return str(path)


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["JAX_COMPILATION_CACHE_DIR"] = session_cache_dir(tmp_path_factory)
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "true"  # as tests/conftest.py: faster compiles
    env["MSA_JAX_NO_PROGRESS"] = "1"
    return env


@pytest.fixture(scope="session")
def cli(cli_env):
    """cli("ask", "--model=...") -> CompletedProcess of `python -m msa_jax.cli.main ask ...`."""
    def run(*args, cwd=None):
        return subprocess.run([sys.executable, "-m", "msa_jax.cli.main", *map(str, args)],
                              env=cli_env, cwd=cwd, capture_output=True, text=True, timeout=300)
    return run


@dataclasses.dataclass
class DemoRun:
    out: pathlib.Path
    stdout: str

    def __getitem__(self, name: str) -> pathlib.Path:
        return self.out / name


@pytest.fixture(scope="session")
def demo(cli, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "outputs"
    result = cli("smoke", f"--config={REPO / 'configs' / 'smoke.py'}",
                 f"--config.output_dir={out}")
    assert result.returncode == 0, result.stdout + result.stderr
    return DemoRun(out, result.stdout)
