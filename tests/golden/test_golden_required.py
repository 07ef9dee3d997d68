"""The golden suite cannot vanish silently: without fixtures, $CI fails the run naming the path;
skipping needs MSA_ALLOW_NO_GOLDEN=1 (and `make test` prints every skip's reason: -rs)."""

import os

import pytest

from tests.conftest import require_golden_dirs


@pytest.fixture
def no_fixtures(monkeypatch, tmp_path):
    empty = tmp_path / "golden"
    empty.mkdir()
    monkeypatch.setenv("MSA_GOLDEN_ROOT", str(empty))
    monkeypatch.delenv("MSA_GOLDEN_DIRS", raising=False)
    monkeypatch.delenv("MSA_ALLOW_NO_GOLDEN", raising=False)
    return str(empty)


def test_missing_golden_fails_under_ci(no_fixtures, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"{no_fixtures} is missing or has no fixture"):
        require_golden_dirs()
    monkeypatch.setenv("MSA_GOLDEN_ROOT", no_fixtures + "/absent")
    with pytest.raises(pytest.fail.Exception, match="absent is missing"):
        require_golden_dirs()


def test_skipping_needs_the_opt_out_under_ci(no_fixtures, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("MSA_ALLOW_NO_GOLDEN", "1")
    with pytest.raises(pytest.skip.Exception, match=no_fixtures):
        require_golden_dirs()


def test_outside_ci_a_missing_golden_skips_with_its_path(no_fixtures, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=no_fixtures):
        require_golden_dirs()


def test_the_fixtures_are_found_where_they_are():
    found = require_golden_dirs()  # skips (or fails under CI) where this checkout has none
    assert found and all(os.path.exists(os.path.join(p, "manifest.json")) for p in found)
