"""Execute every notebook in colabs/ top to bottom on a fresh kernel of this interpreter.

The kernel is registered in a temporary kernelspec folder pointing at `sys.executable`, so the
test runs the notebook with the same Python (venv included) as pytest, whatever kernels Jupyter
has installed. Any cell error fails the test; outputs must be cleared in the committed files.
"""

import glob
import json
import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

from tests.cli.conftest import session_cache_dir  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "colabs", "*.ipynb")))
KERNEL = "msa-jax-test"
TIMEOUT_S = 300  # per cell
# Per-notebook environment: 03_train trains as on a Colab runtime, with one device (the test
# session's 8 emulated CPU devices would split its batch 8 ways and slow it down).
NOTEBOOK_ENV = {"03_train.ipynb": {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}}


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory):
    """A kernelspec folder with one kernel: this interpreter running ipykernel."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python {sys.version_info.major}.{sys.version_info.minor} (tests)",
        "language": "python"}))
    return KernelSpecManager(kernel_dirs=[str(root)])


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """The kernel's environment: msa_jax importable; the test session's compilation cache (shared
    with the CLI tests, whose demo compiles the same tiny model shapes); MSA_JAX_COLAB_QUICK=1."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    env["JAX_COMPILATION_CACHE_DIR"] = session_cache_dir(tmp_path_factory)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "true"  # as tests/conftest.py: faster compiles
    env["MSA_JAX_NO_PROGRESS"] = "1"
    env["MSA_JAX_COLAB_QUICK"] = "1"  # notebooks that train or scale run at a reduced size
    return env


def test_notebooks_exist():
    names = [os.path.basename(p) for p in NOTEBOOKS]
    assert names == ["01_convert_and_generate.ipynb", "02_memory_bank.ipynb", "03_train.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_outputs_cleared(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, \
                f"{os.path.basename(path)}: clear the outputs before committing"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, kernel_specs, kernel_env, tmp_path):
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs)
    client = nbclient.NotebookClient(nb, km=km, timeout=TIMEOUT_S, allow_errors=False,
                                     resources={"metadata": {"path": str(tmp_path)}})
    env = {**kernel_env, **NOTEBOOK_ENV.get(os.path.basename(path), {})}
    client.execute(env=env)  # raises CellExecutionError naming the failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "msa-jax" in text or "router layers" in text
