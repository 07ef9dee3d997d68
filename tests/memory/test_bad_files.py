"""Truncated, corrupt or edited bank and journal files give a BankError naming the file (and, for
a journal, how to recover), not a traceback (issue 9 §3)."""

import json
import os

import numpy as np
import pytest

from msa_jax.memory import store
from msa_jax.memory.bank import BankError, BankSpec, MemoryBank
from msa_jax.memory.encoder import _Journal

SPEC = BankSpec("f" * 16, 2, 2, 4, 8, "float32")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    bank = MemoryBank(SPEC, np.zeros((4, 3, 2, 4), np.float32), np.zeros((4, 3, 2, 4), np.float32))
    tiers = np.arange(2 * 3 * 2 * 4, dtype=np.float32).reshape(2, 3, 2, 4)
    bank.append(["a", "b"], [(1, 2), (3, 4, 5)], ["x", None], [1, 2], tiers, tiers, tiers)
    return store.save_bank(bank, str(tmp_path_factory.mktemp("bank") / "bank"))


@pytest.fixture()
def bank_dir(saved, tmp_path):
    import shutil

    return shutil.copytree(saved, str(tmp_path / "bank"))


def _edit_json(path, fn):
    with open(path, encoding="utf-8") as f:
        value = json.load(f)
    fn(value)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f)


def test_the_untouched_copy_loads(bank_dir):
    assert store.load_bank(bank_dir).doc_ids == ["a", "b"]


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("segments"), r"manifest\.json: missing fields \['segments'\]"),
    (lambda m: m.update(extra=1), r"manifest\.json: unknown fields \['extra'\]"),
    (lambda m: m["spec"].pop("dtype"), r"manifest\.json, spec: missing fields \['dtype'\]"),
    (lambda m: m["spec"].update(rope=1), r"manifest\.json, spec: unknown fields \['rope'\]"),
    (lambda m: m["lengths"].pop("tokens"), r"manifest\.json, lengths: missing fields"),
    (lambda m: m["lengths"].update(tokens=-1), r"manifest\.json: malformed lengths"),
    (lambda m: m["lengths"].update(tokens=4), r"manifest\.json: malformed lengths"),  # != segments
    (lambda m: m.update(format_version=4),
     r"manifest\.json: bank format 4, this version reads 2 and 3"),
])
def test_manifest_fields_are_checked(bank_dir, edit, message):
    _edit_json(os.path.join(bank_dir, "manifest.json"), edit)
    with pytest.raises(BankError, match=message):
        store.load_bank(bank_dir)


def _rewrite(bank_dir, name, values, dtype=np.int64):
    """Replace a per-slot file and its checksum: an edited bank, not a damaged one."""
    path = os.path.join(bank_dir, name)
    np.asarray(values, dtype).tofile(path)
    _edit_json(os.path.join(bank_dir, "manifest.json"),
               lambda m: m["segments"][0]["sha256"].update(
                   {name[:-4]: store._sha256(path)}))


@pytest.mark.parametrize("name, values, message", [
    ("doc_num_chunks.bin", [1, 5], "chunk runs overlap or leave the tiers"),
    ("doc_chunk_offset.bin", [1, 0], "chunk runs overlap"),
    ("token_count.bin", [2, 2], r"token_count\.bin does not add up to tokens\.bin"),
    ("text_bytes.bin", [0, -1], r"text_bytes\.bin does not add up to texts\.bin"),
    ("id_bytes.bin", [2, 0], "a live document has an empty id"),
])
def test_inconsistent_metadata_is_refused(bank_dir, name, values, message):
    _rewrite(bank_dir, name, values)
    with pytest.raises(BankError, match=rf"{bank_dir}: .*{message}"):
        store.load_bank(bank_dir, checksums=False)
    with pytest.raises(BankError, match=message):
        store.load_bank(bank_dir)


def test_a_missing_or_short_deleted_flags_file(bank_dir):
    [flags] = [f for f in os.listdir(bank_dir) if f.startswith("deleted-")]
    with open(os.path.join(bank_dir, flags), "wb") as f:
        f.write(b"\0")
    with pytest.raises(BankError, match=rf"{flags} is missing or does not hold 2 flags"):
        store.load_bank(bank_dir)


@pytest.mark.parametrize("text", ['{"format_version": 2, "spec', "[1, 2]", ""])
def test_a_truncated_or_corrupt_manifest(bank_dir, text):
    path = os.path.join(bank_dir, "manifest.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    with pytest.raises(BankError, match=rf"{path}(, line 1: malformed JSON|: expected a JSON)"):
        store.load_bank(bank_dir)


SHAPE = (2, 3, 2, 4)  # [R, n, K, H] of one block


def _journal_with_block(tmp_path):
    journal = _Journal(str(tmp_path / "journal"), "key", "fp")
    arrays = {n: np.zeros(SHAPE, np.float32) for n in ("routing_keys", "content_k", "content_v")}
    journal.commit(0, arrays)
    return journal, journal._path(0)


def test_a_journal_block_loads_back(tmp_path):
    journal, _ = _journal_with_block(tmp_path)
    assert journal.load(0, SHAPE)["content_k"].shape == SHAPE and journal.load(1, SHAPE) is None


@pytest.mark.parametrize("damage", ["truncate", "garbage", "shape"])
def test_a_damaged_journal_block_is_named_with_the_way_out(tmp_path, damage):
    journal, path = _journal_with_block(tmp_path)
    raw = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(raw[: len(raw) // 2] if damage == "truncate" else
                b"\0" * len(raw) if damage == "garbage" else raw)
    shape = (2, 5, 2, 4) if damage == "shape" else SHAPE
    what = "has shape" if damage == "shape" else "is truncated or corrupt"
    with pytest.raises(BankError, match=rf"journal block 0 \({path}\)(: routing_keys)? {what}.*"
                                        rf"delete {path} to encode that block again"):
        journal.load(0, shape)


@pytest.mark.parametrize("text", ['{"key": "ab', "[]", '{"key": 5}', ""])
def test_a_corrupt_plan_is_named_with_the_way_out(tmp_path, text):
    folder = tmp_path / "journal"
    folder.mkdir()
    (folder / "plan.json").write_text(text)
    with pytest.raises(BankError, match=rf"{folder / 'plan.json'}.*; delete the journal folder "
                                        rf"{folder} to encode from the start"):
        _Journal(str(folder), "key", "fp")
