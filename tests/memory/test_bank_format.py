"""Bank format 2: used in place (memory maps, no copy at load), appends and deletes written as
new rows and metadata only, a kill during an append leaves the previous bank readable, format-1
banks refused with a message and converted."""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from msa_jax.atomic import PAUSE_AT_SWAP
from msa_jax.memory.bank import TIERS, BankError, BankSpec, MemoryBank
from msa_jax.memory.store import convert_bank, load_bank, save_bank
from tests.memory.test_writers import REPO

SPEC = BankSpec("f" * 16, 2, 2, 4, 8, "float32")
FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "bank_format1")


def tiers_of(n: int, start: float) -> np.ndarray:
    """[R, n, K, H] tiers with distinct values (a numpy oracle for what the bank holds)."""
    return (start + np.arange(2 * n * 2 * 4, dtype=np.float32)).reshape(2, n, 2, 4)


def add(bank, ids, start):
    n = len(ids)
    t = tiers_of(n, start)
    bank.append(ids, [(i + 1,) * (i + 1) for i in range(n)], [f"text {i}" for i in ids],
                [1] * n, t, t + 1000, t + 2000)
    return t


def new_bank():
    return MemoryBank(SPEC, np.full((4, 3, 2, 4), 0.5, np.float32),
                      np.full((4, 3, 2, 4), -0.5, np.float32))


def digest(path: str, nbytes: int | None = None) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read() if nbytes is None else f.read(nbytes)).hexdigest()


def test_a_loaded_bank_maps_its_files_instead_of_copying_them(tmp_path):
    bank = new_bank()
    t = add(bank, ["a", "b", "c"], 0)
    loaded = load_bank(save_bank(bank, str(tmp_path / "bank")))
    for name, offset in zip(TIERS, (0, 1000, 2000)):
        rows = loaded.rows(name)
        assert isinstance(rows, np.memmap) and not rows.flags.owndata  # no RAM copy
        np.testing.assert_array_equal(loaded.tier(name), t + offset)
    assert isinstance(loaded.doc_tokens._flat, np.memmap)
    assert loaded.doc_texts._flat.base is not None  # read in place, slot by slot
    assert list(loaded.doc_tokens) == [(1,), (2, 2), (3, 3, 3)]
    assert [loaded.doc_texts[s] for s in range(3)] == ["text a", "text b", "text c"]


def test_a_fresh_bank_grows_its_tiers_in_place(tmp_path):
    """Appending past the capacity resizes the RAM tiers in place (no second copy, so a build
    peaks at about its final size); the rows are unchanged, and a loaded bank's mapped tiers are
    copied on their first growth instead."""
    bank, want = new_bank(), []
    add(bank, ["d0"], 0)
    objects = {n: id(bank._tiers[n]) for n in SPEC.arrays}
    capacity = bank._tiers["routing_keys"].shape[0]
    for i in range(1, capacity + 40):  # well past the first capacity
        want.append(add(bank, [f"d{i}"], 10 * i))
    assert bank._tiers["routing_keys"].shape[0] > capacity
    assert {n: id(bank._tiers[n]) for n in SPEC.arrays} == objects
    np.testing.assert_array_equal(bank.tier("content_v")[:, 1:], np.concatenate(want, 1) + 2000)
    assert bank.chunk_doc.tolist() == list(range(capacity + 40))
    loaded = load_bank(save_bank(bank, str(tmp_path / "bank")))
    for i in range(capacity + 40, 2 * capacity + 80):
        add(loaded, [f"d{i}"], 10 * i)
    assert not isinstance(loaded.rows("routing_keys"), np.memmap)
    np.testing.assert_array_equal(loaded.tier("content_k")[:, :capacity + 40],
                                  bank.tier("content_k"))


def test_append_and_delete_write_only_new_rows_and_metadata(tmp_path):
    bank = new_bank()
    t1 = add(bank, ["a", "b"], 0)
    path = save_bank(bank, str(tmp_path / "bank"))
    sizes = {n: os.path.getsize(os.path.join(path, f"{n}.bin")) for n in TIERS}
    before = {n: digest(os.path.join(path, f"{n}.bin")) for n in TIERS}
    loaded = load_bank(path)
    t2 = add(loaded, ["c", "d"], 500)
    loaded.delete(["a"])
    save_bank(loaded, path, overwrite=True)
    row = 2 * 2 * 4 * 4  # bytes of one chunk [R, K, H] float32
    for n in TIERS:
        full = os.path.join(path, f"{n}.bin")
        assert os.path.getsize(full) == sizes[n] + 2 * row  # the two new chunks, appended
        assert digest(full, sizes[n]) == before[n]  # the saved rows untouched
    again = load_bank(path)
    assert again.doc_ids == [None, "b", "c", "d"] and again.num_docs == 3
    assert list(again.doc_tokens) == [None, (2, 2), (1,), (2, 2)]
    assert list(again.doc_texts) == [None, "text b", "text c", "text d"]
    np.testing.assert_array_equal(again.chunk_doc, [-1, 1, 2, 3])
    np.testing.assert_array_equal(again.tier("routing_keys"), np.concatenate([t1, t2], 1))
    # a delete alone: metadata only, the tiers keep their bytes
    tiers_now = {n: digest(os.path.join(path, f"{n}.bin")) for n in TIERS}
    again.delete(["c"])
    save_bank(again, path, overwrite=True)
    assert {n: digest(os.path.join(path, f"{n}.bin")) for n in TIERS} == tiers_now
    assert load_bank(path).doc_ids == [None, "b", None, "d"]
    assert len([f for f in os.listdir(path) if f.startswith("deleted-")]) == 1
    # compacting renumbers slots: written anew, deleted slots dropped
    again.compact()
    save_bank(again, path, overwrite=True)
    final = load_bank(path)
    assert final.doc_ids == ["b", "d"]
    np.testing.assert_array_equal(final.tier("content_k")[:, 1], t2[:, 1] + 1000)


WRITER = ("import sys; import numpy as np; from msa_jax.memory.store import load_bank, save_bank;"
          " from tests.memory.test_bank_format import add; b = load_bank(sys.argv[1]);"
          " add(b, ['late'], 900); b.delete(['a']); save_bank(b, sys.argv[1], overwrite=True)")


def test_a_kill_during_an_append_leaves_the_previous_bank(tmp_path):
    bank = new_bank()
    t = add(bank, ["a", "b"], 0)
    path = save_bank(bank, str(tmp_path / "bank"))
    ready = tmp_path / "ready"
    env = dict(os.environ, PYTHONPATH=str(REPO), **{PAUSE_AT_SWAP: str(ready)})
    proc = subprocess.Popen([sys.executable, "-c", WRITER, path], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    try:
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"the writer finished without pausing:\n{proc.stdout.read()}")
            assert time.monotonic() < deadline, "the writer did not reach the manifest in time"
            time.sleep(0.1)
        # paused after appending its rows, before the manifest: the tiers have a tail
        assert os.path.getsize(os.path.join(path, "routing_keys.bin")) > t.nbytes
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    old = load_bank(path)  # the previous bank, checksums included
    assert old.doc_ids == ["a", "b"]
    np.testing.assert_array_equal(old.tier("routing_keys"), t)
    add(old, ["c"], 700)  # the next append cuts the dead tail first
    save_bank(old, path, overwrite=True)
    assert load_bank(path).doc_ids == ["a", "b", "c"]
    np.testing.assert_array_equal(load_bank(path).tier("content_v")[:, 2:],
                                  tiers_of(1, 700) + 2000)


def test_a_bank_changed_on_disk_meanwhile_is_rewritten_not_appended(tmp_path):
    path = str(tmp_path / "bank")
    first = new_bank()
    add(first, ["a"], 0)
    save_bank(first, path)
    stale = load_bank(path)
    other = load_bank(path)
    add(other, ["b"], 10)
    save_bank(other, path, overwrite=True)  # a new generation on disk
    add(stale, ["c"], 20)
    save_bank(stale, path, overwrite=True)  # cannot append to what it did not load: rewrites
    assert load_bank(path).doc_ids == ["a", "c"]


def test_a_format1_bank_is_refused_then_converted(tmp_path):
    """The fixture was written by main's format-1 save_bank: documents a (1 chunk, text "x") and
    b (2 chunks, no text); tiers arange(48) [2, 3, 2, 4] + 0 / 100 / 200; prefix 0.5 / -0.5."""
    path = shutil.copytree(FIXTURE, str(tmp_path / "old"))
    with pytest.raises(BankError, match=rf"{path}: memory bank format 1 .* convert it once with "
                                        rf"msa_jax.memory.store.convert_bank"):
        load_bank(path)
    assert convert_bank(path) == path
    bank = load_bank(path)
    assert bank.doc_ids == ["a", "b"] and list(bank.doc_tokens) == [(1, 2), (3, 4, 5)]
    assert list(bank.doc_texts) == ["x", None] and bank.doc_num_chunks == [1, 2]
    want = np.arange(48, dtype=np.float32).reshape(2, 3, 2, 4)
    for name, offset in zip(TIERS, (0, 100, 200)):
        np.testing.assert_array_equal(bank.tier(name), want + offset)
    np.testing.assert_array_equal(bank.prefix_k, np.full((4, 3, 2, 4), 0.5, np.float32))
    assert not os.path.exists(os.path.join(path, "bank.json"))


def test_token_keys_change_with_the_slots_not_with_reads(tmp_path):
    """The cheap per-slot identity the sharded view's cache compares (parallel._snapshot)."""
    bank = new_bank()
    add(bank, ["a", "b"], 0)
    loaded = load_bank(save_bank(bank, str(tmp_path / "bank")))
    keys = loaded.doc_tokens.keys()
    assert list(loaded.doc_tokens) and loaded.doc_tokens.keys() == keys  # reading changes nothing
    loaded.delete(["b"])  # trailing: trimmed
    assert loaded.doc_tokens.keys() == keys[:1]
    add(loaded, ["b"], 0)  # the same id and tokens again, but a new slot value
    assert loaded.doc_tokens.keys()[0] == keys[0] and loaded.doc_tokens.keys()[1] != keys[1]
    loaded.delete(["a"])
    assert loaded.doc_tokens.keys()[0] is None


def test_appended_token_ids_are_held_as_int32_copies():
    """Until saved, an appended document's token ids are an int32 array (4 B per token, not a
    tuple of Python ints), copied from the caller's and read-only; reads give tuples as before."""
    from msa_jax.memory.columns import TokenColumn

    col, given = TokenColumn(), np.array([7, 300, 70000], np.int64)
    col.append(given)
    col.append((1, 2))
    given[0] = -5  # the caller's array changes: the column's copy does not
    held = col.array(0)
    assert held.dtype == np.int32 and held.tolist() == [7, 300, 70000]
    assert not held.flags.writeable
    assert col[0] == (7, 300, 70000) and isinstance(col[1], tuple) and list(col) == [
        (7, 300, 70000), (1, 2)]
    assert col.live_total() == 5 and col.pop() == (1, 2) and len(col) == 1
