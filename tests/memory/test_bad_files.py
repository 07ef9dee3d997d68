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
    store._write_integrity(os.path.dirname(path))  # an edited bank, not a damaged one


def test_the_untouched_copy_loads(bank_dir):
    assert store.load_bank(bank_dir).doc_ids == ["a", "b"]


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("stored"), r"bank\.json: missing fields \['stored'\]"),
    (lambda m: m.update(extra=1), r"bank\.json: unknown fields \['extra'\]"),
    (lambda m: m["spec"].pop("dtype"), r"bank\.json, spec: missing fields \['dtype'\]"),
    (lambda m: m["spec"].update(rope=1), r"bank\.json, spec: unknown fields \['rope'\]"),
    (lambda m: m["shapes"].pop("content_v"), r"bank\.json, shapes: missing fields"),
    (lambda m: m["shapes"].update(content_k="big"),
     r"bank\.json: malformed shapes \['content_k'\]"),
])
def test_bank_json_fields_are_checked(bank_dir, edit, message):
    _edit_json(os.path.join(bank_dir, "bank.json"), edit)
    with pytest.raises(BankError, match=message):
        store.load_bank(bank_dir)


def test_a_document_record_without_a_field(bank_dir):
    path = os.path.join(bank_dir, "documents.jsonl")
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    record = json.loads(lines[1])
    del record["tokens"]
    with open(path, "w", encoding="utf-8") as f:
        f.write(lines[0] + json.dumps(record) + "\n")
    store._write_integrity(bank_dir)
    with pytest.raises(BankError, match=r"documents\.jsonl, line 2: missing fields \['tokens'\]"):
        store.load_bank(bank_dir)


@pytest.mark.parametrize("text", ['{"bank.json": {"size": 1', "[1, 2]", '{"a": {"size": "x"}}'])
def test_a_truncated_or_corrupt_integrity_table(bank_dir, text):
    path = os.path.join(bank_dir, "integrity.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    with pytest.raises(BankError, match=rf"{path}(, line 1: malformed JSON|: not an integrity)"
                                        r".*truncated or corrupt"):
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
