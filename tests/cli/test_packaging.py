"""The wheel ships what the console script needs: both packages and the bundled configs."""

import importlib.util
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from msa_jax.cli import common
from msa_jax.cli.commands import smoke

REPO = pathlib.Path(__file__).resolve().parents[2]
SOURCES = ["setup.py", "README.md", "msa_jax", "kernels_pallas", "configs", "models"]


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="needs setuptools")
def test_wheel_contains_packages_and_configs(tmp_path):
    src = tmp_path / "src"  # a copy, so the build leaves no build/ or egg-info in the repository
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("msa_jax-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.name for p in (REPO / "configs").glob("*.py") if p.name != "__init__.py"}
    assert {f"msa_jax/configs/{c}" for c in configs} <= names
    assert {"msa_jax/cli/main.py", "kernels_pallas/routing/api.py"} <= names
    model = {f"msa_jax/models/{p.parent.name}/{p.name}" for p in (REPO / "models").glob("*/*")}
    assert model and model <= names  # the bundled demo model


def test_smoke_config_falls_back_to_the_installed_copy(tmp_path, monkeypatch):
    """Installed from a wheel there is no repository: the default is msa_jax/configs/smoke.py."""
    installed = tmp_path / "site-packages" / "msa_jax"
    (installed / "configs").mkdir(parents=True)
    (installed / "configs" / "smoke.py").write_text("")
    monkeypatch.setattr(common, "REPO_ROOT", str(installed.parent))
    monkeypatch.setattr(common, "PACKAGE_ROOT", str(installed))
    assert smoke.default_config_path() == str(installed / "configs" / "smoke.py")


def test_smoke_config_prefers_the_repository():
    assert smoke.default_config_path() == str(REPO / "configs" / "smoke.py")
