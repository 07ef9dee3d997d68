"""Memory bank: dynamic add/delete, save/load with integrity checks, resumable encoding, and
clear errors for bad input."""

import os

import numpy as np
import pytest

import msa_jax
from msa_jax.inference.memory_generate import CONTEXT, ROUTING, QueryRow
from msa_jax.memory import encoder as encoder_mod
from msa_jax.memory.bank import BankError
from msa_jax.memory.encoder import DocInput, encode_documents
from msa_jax.memory.layout import LayoutError
from msa_jax.memory.store import load_bank, save_bank
from tests.tolerances import F32_REASSOC


@pytest.fixture(scope="module")
def model():
    cfg = msa_jax.preset("tiny-msa", vocab_size=64)
    return msa_jax.MSAModel.random(cfg, 0)


def make_docs(n, seed=0, prefix="d"):
    rs = np.random.RandomState(seed)
    return [DocInput(f"{prefix}{i}", tuple(rs.randint(5, 64, rs.randint(3, 30)).tolist()),
                     text=f"text of {prefix}{i}") for i in range(n)]


TIERS = ("routing_keys", "content_k", "content_v")


def snapshot(bank):
    return ([bank.tier(n).copy() for n in TIERS],
            bank.chunk_doc.copy(), list(bank.doc_ids), list(bank.doc_chunk_offset),
            list(bank.doc_num_chunks), list(bank.doc_tokens), list(bank.doc_texts))


def assert_same(a, b):
    for x, y in zip(a[0], b[0]):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2:] == b[2:]


def test_add_then_delete_restores_the_bank(model):
    bank = model.encode_memory(make_docs(6), progress=False)
    before = snapshot(bank)
    model.encode_memory(make_docs(3, seed=1, prefix="new"), bank=bank, progress=False)
    assert bank.num_docs == 9
    bank.delete(["new0", "new1", "new2"])
    assert_same(snapshot(bank), before)


def live_documents(bank):
    """Each live document's own chunks and metadata, in slot order (gathered from this bank)."""
    out = []
    for s in bank.live_slots():
        off, n = bank.doc_chunk_offset[s], bank.doc_num_chunks[s]
        out.append((bank.doc_ids[s], bank.doc_tokens[s], bank.doc_texts[s], n,
                    [bank.tier(t)[:, off:off + n].copy() for t in TIERS]))
    return out


def test_delete_in_the_middle_then_compact(model):
    docs = make_docs(6)
    bank = model.encode_memory(docs, progress=False)
    bank.delete(["d2"])
    assert bank.num_docs == 5 and bank.num_slots == 6
    assert not (bank.chunk_doc == 2).any()
    before = live_documents(bank)
    bank.compact()
    # compact only moves data: bit-equal to this bank's own live chunks before compacting
    assert bank.num_slots == 5 and bank.live_slots() == list(range(5))
    assert bank.doc_chunk_offset == list(np.cumsum([0] + [d[3] for d in before[:-1]]))
    np.testing.assert_array_equal(bank.chunk_doc, np.repeat(np.arange(5), [d[3] for d in before]))
    for got, want in zip(live_documents(bank), before):
        assert got[:4] == want[:4]
        for a, b in zip(got[4], want[4]):
            np.testing.assert_array_equal(a, b)
    # a fresh encoding packs the remaining documents into other blocks: the same values up to
    # float32 reassociation, not bit-equal
    expected = snapshot(model.encode_memory([d for d in docs if d.id != "d2"], progress=False))
    got = snapshot(bank)
    for a, b in zip(got[0], expected[0]):
        np.testing.assert_allclose(a, b, **F32_REASSOC)
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[2:] == expected[2:]
    with pytest.raises(BankError, match="'d2' is not in the bank"):
        bank.delete(["d2"])


def test_save_load_round_trip_and_integrity(model, tmp_path):
    bank = model.encode_memory(make_docs(5), progress=False)
    bank.delete(["d1"])
    path = save_bank(bank, str(tmp_path / "bank"))
    loaded = load_bank(path)
    bank.compact()
    assert_same(snapshot(loaded), snapshot(bank))
    np.testing.assert_array_equal(loaded.prefix_k, bank.prefix_k)
    with pytest.raises(FileExistsError):
        save_bank(bank, path)
    # a truncated file
    victim = max((os.path.join(path, f) for f in os.listdir(path)), key=os.path.getsize)
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) - 1)
    with pytest.raises(BankError, match=rf"{os.path.basename(victim)} has .* \(truncated"):
        load_bank(path)


@pytest.mark.parametrize("name, when", [("doc_num_chunks.bin", "load"), ("ids.bin", "load"),
                                        ("routing_keys.bin", "view"), ("content_v.bin", "view"),
                                        ("tokens.bin", "read"), ("texts.bin", "read")])
def test_swapped_file_is_caught_by_checksum(model, tmp_path, name, when):
    """A file of the same size from another bank: metadata refused at load, a tier before its
    first read (the device view), tokens and texts on the first read of one of their slots."""
    a = save_bank(model.encode_memory(make_docs(4, seed=0), progress=False), str(tmp_path / "a"))
    b = save_bank(model.encode_memory(make_docs(4, seed=5, prefix="e"), progress=False),
                  str(tmp_path / "b"))
    with open(os.path.join(b, name), "rb") as f:
        other = f.read()
    target = os.path.join(a, name)
    with open(target, "rb") as f:
        mine = f.read()
    other = (other + b"~" * len(mine))[:len(mine)]  # same size, other content
    assert other != mine
    with open(target, "wb") as f:
        f.write(other)
    message = rf"{name} .*does not match its checksum"
    if when == "load":
        with pytest.raises(BankError, match=message):
            load_bank(a)
        return
    bank = load_bank(a)
    with pytest.raises(BankError, match=message):
        if when == "view":
            bank.view()
        else:
            [bank.doc_tokens[s] if name == "tokens.bin" else bank.doc_texts[s]
             for s in range(bank.num_slots)]
    assert load_bank(a, checksums=False).num_docs == 4  # sizes and structure still agree


def test_bank_from_another_model_is_refused(model):
    other = msa_jax.MSAModel.random(model.cfg, 1)
    bank = other.encode_memory(make_docs(3), progress=False)
    row = QueryRow.build(([7, 8, 9], ROUTING), ([4, 3, 1], CONTEXT))
    with pytest.raises(BankError, match="another model"):
        model.ask_tokens([row], bank, max_new_tokens=2)
    with pytest.raises(BankError, match="different model"):
        model.encode_memory(make_docs(2, seed=9, prefix="x"), bank=bank, progress=False)


def test_interrupted_encoding_resumes_from_the_last_committed_block(model, tmp_path,
                                                                    monkeypatch):
    docs = make_docs(12)
    journal = str(tmp_path / "journal")
    reference = encode_documents(model.cfg, model.params, docs, block_tokens=64,
                                 show_progress=False)
    real = encoder_mod._dispatch
    calls = []

    def flaky(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(encoder_mod, "_dispatch", flaky)
    with pytest.raises(KeyboardInterrupt):
        encode_documents(model.cfg, model.params, docs, block_tokens=64, journal=journal,
                         show_progress=False)
    committed = sorted(f for f in os.listdir(journal) if f.startswith("block_"))
    # one block is in flight while the previous one is committed: interrupted when starting the
    # third, the first is on disk and the second (dispatched, never appended) is lost
    assert committed == ["block_000000.npz"]
    counted = []
    monkeypatch.setattr(encoder_mod, "_dispatch",
                        lambda *a, **k: counted.append(1) or real(*a, **k))
    resumed = encode_documents(model.cfg, model.params, docs, block_tokens=64, journal=journal,
                               show_progress=False)
    n_blocks = len(encoder_mod.plan_blocks([len(d.tokens) for d in docs], 64))
    assert len(counted) == n_blocks - 1  # the committed block was not encoded again
    # bit-equal: the same plan (block_tokens 64) runs every block through the same jitted
    # function on the same inputs and shapes as the reference; the journal only stores the result
    assert_same(snapshot(resumed), snapshot(reference))
    with pytest.raises(BankError, match="another encoding"):
        encode_documents(model.cfg, model.params, docs[:5], block_tokens=64, journal=journal,
                         show_progress=False)


def test_bad_input(model):
    cfg, params = model.cfg, model.params
    with pytest.raises(BankError, match="empty corpus"):
        encode_documents(cfg, params, [], show_progress=False)
    with pytest.raises(BankError, match="'e' .* is empty"):
        encode_documents(cfg, params, [DocInput("e", ())], show_progress=False)
    with pytest.raises(LayoutError, match="document 1 has 40 tokens, more than a block of 32"):
        encode_documents(cfg, params, [DocInput("a", (5,) * 3), DocInput("b", (6,) * 40)],
                         block_tokens=32, show_progress=False)
    with pytest.raises(BankError, match="appears twice"):
        encode_documents(cfg, params, [DocInput("a", (5,)), DocInput("a", (6,))],
                         show_progress=False)
    bank = model.encode_memory(make_docs(2), progress=False)
    with pytest.raises(ValueError, match="no routing"):
        model.ask_tokens([QueryRow.build(([4, 3, 1], CONTEXT))], bank)
    # top-k (4) larger than the bank (2 documents): every document is selected, once
    _, routed = model.ask_tokens([QueryRow.build(([7, 8], ROUTING), ([4, 3, 1], CONTEXT))],
                                 bank, max_new_tokens=1)
    for choice in routed[0]:
        assert sorted(choice.docs) == ["d0", "d1"]
    bank.delete(["d0", "d1"])
    with pytest.raises(BankError, match="no documents"):
        model.ask_tokens([QueryRow.build(([7, 8], ROUTING))], bank)


def test_document_lookup_follows_add_delete_and_compact():
    """slot_of / num_docs (an id -> slot index kept by the bank) against a scan of doc_ids after
    every operation; a repeated id within one append is refused, a repeated id in delete is
    deleted once."""
    from msa_jax.memory.bank import BankSpec, MemoryBank

    spec = BankSpec("fp", num_router_layers=1, num_kv_heads=1, head_dim=2, pooling_size=4,
                    dtype="float32")
    bank = MemoryBank(spec, np.zeros((1, 1, 1, 2), np.float32), np.zeros((1, 1, 1, 2), np.float32))

    def add(ids):
        n = len(ids)
        tier = np.arange(2 * n, dtype=np.float32).reshape(spec.chunk_shape(n))
        bank.append(ids, [[1]] * n, [None] * n, [1] * n, tier, tier, tier)

    def check():
        live = [d for d in bank.doc_ids if d is not None]
        assert bank.num_docs == len(live)
        for d in live:
            assert bank.slot_of(d) == bank.doc_ids.index(d)
        with pytest.raises(BankError, match="not in the bank"):
            bank.slot_of("absent")

    add(["a", "b", "c", "d"])
    check()
    with pytest.raises(BankError, match="already in the bank"):
        add(["e", "e"])
    with pytest.raises(BankError, match="already in the bank"):
        add(["b"])
    check()
    bank.delete(["b", "b"])
    check()
    bank.delete(["d"])  # trailing: trimmed
    check()
    add(["d", "e"])
    check()
    bank.compact()
    check()
    assert [d for d in bank.doc_ids] == ["a", "c", "d", "e"]
