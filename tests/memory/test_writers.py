"""Concurrent and interrupted writers lose nothing: locked destinations and journals, a swap that
survives SIGKILL, temporary folders of killed runs cleaned, bad destinations refused up front."""

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import msa_jax
from msa_jax.atomic import PAUSE_AT_SWAP, atomic_directory, leftovers
from msa_jax.locks import PathLocked
from msa_jax.memory.bank import BankSpec, MemoryBank
from msa_jax.memory.encoder import DocInput, encode_documents

REPO = pathlib.Path(__file__).resolve().parents[2]
# A writer in another process: save_bank(synthetic_bank(version), dest, overwrite=True).
WRITER = ("import sys; import msa_jax; from tests.memory.test_writers import synthetic_bank; "
          "msa_jax.save_bank(synthetic_bank(float(sys.argv[2])), sys.argv[1], overwrite=True)")


def synthetic_bank(version: float) -> MemoryBank:
    """One document of one chunk whose tiers all hold `version` (no model needed)."""
    spec = BankSpec("2-test", 1, 1, 2, 4, "float32")
    bank = MemoryBank(spec, np.zeros((1, 0, 1, 2), np.float32), np.zeros((1, 0, 1, 2), np.float32))
    tier = np.full(spec.chunk_shape(1), version, np.float32)
    bank.append(["d"], [[1, 2, 3]], [f"version {version}"], [1], tier, tier, tier)
    return bank


def version_of(path) -> float:
    return float(msa_jax.load_bank(str(path)).tier("routing_keys")[0, 0, 0, 0])


def start_paused_writer(dest, version: float, ready) -> subprocess.Popen:
    """A process replacing `dest`, paused at the swap (old bank moved aside, new not in place)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), **{PAUSE_AT_SWAP: str(ready)})
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(dest), str(version)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not os.path.exists(ready):
        if proc.poll() is not None:
            pytest.fail(f"the writer finished without pausing at the swap:\n{proc.stdout.read()}")
        assert time.monotonic() < deadline, "the writer did not reach the swap in time"
        time.sleep(0.1)
    return proc


def test_a_kill_inside_the_swap_is_recovered_by_the_next_open(tmp_path):
    dest = tmp_path / "bank"
    msa_jax.save_bank(synthetic_bank(1.0), str(dest))
    proc = start_paused_writer(dest, 2.0, tmp_path / "ready")
    try:
        assert not dest.exists() and len(leftovers(str(dest))) == 2  # new and old, hidden
        with pytest.raises(PathLocked, match=rf"{dest} is in use by another writer \(pid "
                                             rf"{proc.pid}"):
            msa_jax.save_bank(synthetic_bank(3.0), str(dest), overwrite=True)
        with pytest.raises(FileNotFoundError, match="interrupted replacement left"):
            msa_jax.load_bank(str(dest))  # the writer is alive: its folders are left alone
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not dest.exists()
    assert version_of(dest) == 2.0  # the complete new bank is put in place
    assert leftovers(str(dest)) == []


def test_a_kill_inside_the_swap_is_recovered_by_the_next_write(tmp_path):
    dest = tmp_path / "bank"
    msa_jax.save_bank(synthetic_bank(1.0), str(dest))
    proc = start_paused_writer(dest, 2.0, tmp_path / "ready")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with pytest.raises(FileExistsError, match=f"{dest} exists"):
        msa_jax.save_bank(synthetic_bank(3.0), str(dest))  # recovered first, so it exists
    assert version_of(dest) == 2.0 and leftovers(str(dest)) == []


def test_temporary_folders_of_killed_runs_are_removed_by_the_next_write(tmp_path):
    dest = tmp_path / "bank"
    stale = tmp_path / ".bank.tmp-k1lled_0"  # as tempfile.mkdtemp names them
    (stale / "arrays").mkdir(parents=True)
    other = tmp_path / ".banker.tmp-abcdefgh"  # another destination's: not ours to remove
    other.mkdir()
    msa_jax.save_bank(synthetic_bank(1.0), str(dest))
    assert not stale.exists() and other.exists()
    assert version_of(dest) == 1.0


def test_a_second_writer_of_one_destination_is_refused(tmp_path):
    dest = tmp_path / "out"
    inside, release, errors = threading.Event(), threading.Event(), []

    def first():
        try:
            with atomic_directory(str(dest)) as tmp:
                pathlib.Path(tmp, "who").write_text("first")
                inside.set()
                release.wait(60)
        except BaseException as e:  # noqa: BLE001  reported below
            errors.append(e)
            inside.set()

    t = threading.Thread(target=first)
    t.start()
    inside.wait(60)
    try:
        with pytest.raises(PathLocked, match=f"{dest} is in use by another writer"):
            with atomic_directory(str(dest)) as tmp:
                pathlib.Path(tmp, "who").write_text("second")
    finally:
        release.set()
        t.join()
    assert not errors
    assert (dest / "who").read_text() == "first"


def test_the_destination_is_checked_again_before_the_rename(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(FileExistsError, match=f"{dest} exists"):
        with atomic_directory(str(dest)) as tmp:
            pathlib.Path(tmp, "who").write_text("late")
            dest.mkdir()  # made meanwhile by a writer that does not lock
            (dest / "who").write_text("early")
    assert (dest / "who").read_text() == "early" and leftovers(str(dest)) == []


@pytest.mark.parametrize("make", ["file", "nested"])
def test_an_impossible_destination_fails_before_the_compute(tmp_path, monkeypatch, make):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    dest = blocker / "bank" if make == "file" else blocker / "x" / "bank"

    def never(*args, **kwargs):
        raise AssertionError("computed before checking the destination")

    monkeypatch.setattr("msa_jax.memory.store._write_new", never)
    with pytest.raises(OSError, match=f"cannot write {dest}: its folder"):
        msa_jax.save_bank(synthetic_bank(1.0), str(dest))
    monkeypatch.setattr("msa_jax.convert.hf.tensors_from_params", never)
    model = msa_jax.MSAModel.random(msa_jax.preset("tiny"), 0)
    with pytest.raises(OSError, match=f"cannot write {dest}: its folder"):
        model.save_pretrained(str(dest))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_destination_fails_before_the_compute(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OSError, match="read-only"):
            msa_jax.save_bank(synthetic_bank(1.0), str(folder / "bank"))
    finally:
        folder.chmod(0o755)


def test_a_journal_is_used_by_one_encoding_at_a_time(tmp_path):
    model = msa_jax.MSAModel.random(msa_jax.preset("tiny-msa", vocab_size=64), 0)
    docs = [DocInput(f"d{i}", tuple(range(5, 5 + 9 + i)))
            for i in range(4)]
    journal = str(tmp_path / "journal")
    paused, release, out = threading.Event(), threading.Event(), {}

    def on_block(bank):
        paused.set()
        release.wait(120)

    def first():
        try:
            out["bank"] = encode_documents(model.cfg, model.params, docs, journal=journal,
                                           block_tokens=16, show_progress=False,
                                           on_block=on_block)
        except BaseException as e:  # noqa: BLE001  reported below
            out["error"] = e
            paused.set()

    t = threading.Thread(target=first)
    t.start()
    paused.wait(240)
    try:
        for corpus in (docs, docs[:2]):  # resuming it, or another corpus: both wait their turn
            with pytest.raises(PathLocked, match=f"{journal} is in use by another writer"):
                encode_documents(model.cfg, model.params, corpus, journal=journal,
                                 block_tokens=16, show_progress=False)
    finally:
        release.set()
        t.join()
    assert "error" not in out
    again = encode_documents(model.cfg, model.params, docs, journal=journal, block_tokens=16,
                             show_progress=False)  # now free: resumes from the journal
    for tier in ("routing_keys", "content_k", "content_v"):
        np.testing.assert_array_equal(again.tier(tier), out["bank"].tier(tier))
