"""The grain input pipeline: deterministic, resumable, sharded by process, static shapes."""

import dataclasses
import re

import numpy as np
import pytest

from msa_jax.config import preset
from msa_jax.data import ByteTokenizer, Document
from msa_jax.errors import ConfigError
from msa_jax.inference.interleave import PromptTemplate
from msa_jax.model.train_forward import READ_LABEL
from msa_jax.training.packing import BATCH_FIELDS
from msa_jax.training.pipeline import (PipelineConfig, StepBatches, eval_batches,
                                       make_train_iterator)
from msa_jax.training.samples import Sample, SampleError, save_samples
from msa_jax.training.tasks import make_retrieval_samples

TOK = ByteTokenizer()
_TINY = preset("tiny-msa")
CFG = _TINY.replace(msa=dataclasses.replace(
    _TINY.msa, prefix_token_ids=tuple(TOK.encode(PromptTemplate().prefix, True))))
DATA = PipelineConfig(batch_size=4, length_buckets=(512, 1024, 2048), doc_buckets=(2, 4))
SAMPLES = make_retrieval_samples(6, hops=2, docs_per_sample=3, seed=3)  # 12 samples


def _take(it, n):
    return [next(it) for _ in range(n)]


def _equal(a, b):
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def test_deterministic_given_seed():
    a = _take(make_train_iterator(SAMPLES, TOK, CFG, DATA, seed=5), 4)
    assert _equal(a, _take(make_train_iterator(SAMPLES, TOK, CFG, DATA, seed=5), 4))
    assert not _equal(a, _take(make_train_iterator(SAMPLES, TOK, CFG, DATA, seed=6), 4))


def test_resume_equals_straight_run():
    straight = _take(make_train_iterator(SAMPLES, TOK, CFG, DATA, seed=2), 7)
    resumed = _take(make_train_iterator(SAMPLES, TOK, CFG, DATA, seed=2, start_step=4), 3)
    assert _equal(resumed, straight[4:])
    it = make_train_iterator(SAMPLES, TOK, CFG, DATA, seed=2)
    _take(it, 2)
    state = it.get_state()  # grain's own iterator state works too
    fresh = make_train_iterator(SAMPLES, TOK, CFG, DATA, seed=2)
    fresh.set_state(state)
    assert _equal(_take(fresh, 5), straight[2:])


def test_each_epoch_is_a_permutation():
    fn = StepBatches(SAMPLES, TOK, CFG, DATA, seed=1)
    epochs = [np.concatenate([fn.indices(s) for s in range(3 * e, 3 * e + 3)]) for e in (0, 1)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(12))
    assert epochs[0].tolist() != epochs[1].tolist()  # reshuffled each epoch


def test_process_shards_are_disjoint_and_complete():
    whole = StepBatches(SAMPLES, TOK, CFG, DATA, seed=4)
    parts = [StepBatches(SAMPLES, TOK, CFG, DATA, seed=4, process_index=p, process_count=2)
             for p in range(2)]
    for step in range(5):
        a, b = (p.indices(step) for p in parts)
        assert set(a).isdisjoint(b) and np.array_equal(np.concatenate([a, b]),
                                                       whole.indices(step))
        full, halves = whole.batch(step), [p.batch(step) for p in parts]
        for k in BATCH_FIELDS[:-1]:  # the same global shape on every process
            np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), full[k])
    with pytest.raises(ConfigError, match="not divisible by process_count 3"):
        StepBatches(SAMPLES, TOK, CFG, DATA, process_index=0, process_count=3)
    with pytest.raises(ConfigError, match="process_index 2 is not in"):
        StepBatches(SAMPLES, TOK, CFG, DATA, process_index=2, process_count=2)


def test_static_shapes_from_buckets_and_doc_labels():
    seen = set()
    fn = StepBatches(SAMPLES, TOK, CFG, DATA, seed=0)
    for step, batch in zip(range(6), make_train_iterator(SAMPLES, TOK, CFG, DATA, seed=0)):
        length, m = batch["tokens"].shape[1], batch["doc_labels"].shape[1]
        assert length in DATA.length_buckets and m in DATA.doc_buckets
        assert int(batch["num_docs"]) == m and batch["tokens"].shape[0] == 4
        assert all(batch[k].shape == (4, length) and batch[k].dtype == np.int32
                   for k in BATCH_FIELDS[:5])
        seen.add((length, m))
        for row, i in enumerate(fn.indices(step)):  # doc_labels name the relevant documents
            sample, roles = SAMPLES[i], batch["roles"][row]
            for d in range(1, m + 1):
                ids = batch["tokens"][row][roles == d]
                named = re.match(r"<\|im_start\|>\[(\w+)\]", TOK.decode(ids)) if len(ids) else None
                relevant = bool(named) and named.group(1) in sample.relevant_ids
                # READ_LABEL: the relevant document the step's target names (its new hop)
                read = relevant and named.group(1) == sample.relevant_ids[-1]
                assert batch["doc_labels"][row, d - 1] == (READ_LABEL if read else int(relevant))
    assert len(seen) <= len(DATA.length_buckets) * len(DATA.doc_buckets)


def test_bad_samples_and_settings_are_named(tmp_path):
    long = Sample("too-long", (Document("0", text="y" * 3000),), "q?", ("0",))
    with pytest.raises(SampleError, match="sample 'too-long': .* largest length bucket 2048"):
        make_train_iterator(SAMPLES + [long], TOK, CFG, DATA)
    crowded = Sample("crowded", tuple(Document(str(i), tokens=[9]) for i in range(5)), "q?",
                     ("0",))
    with pytest.raises(SampleError, match="sample 'crowded': 5 documents exceed"):
        make_train_iterator([crowded], TOK, CFG, DATA)
    small_vocab = CFG.replace(vocab_size=100)
    with pytest.raises(SampleError, match=r"sample 'train-0\.0': token id \d+ is outside"):
        make_train_iterator(SAMPLES, TOK, small_vocab, DATA)
    no_prefix = CFG.replace(msa=dataclasses.replace(CFG.msa, prefix_token_ids=()))
    with pytest.raises(ConfigError, match="cfg.msa.prefix_token_ids is empty"):
        make_train_iterator(SAMPLES, TOK, no_prefix, DATA)
    path = tmp_path / "train.jsonl"
    save_samples([SAMPLES[0], long], path)
    with pytest.raises(SampleError, match="sample 'too-long'"):
        make_train_iterator(str(path), TOK, CFG, DATA)
    with pytest.raises(SampleError, match="holds no samples"):
        make_train_iterator([], TOK, CFG, DATA)


def test_eval_batches_cover_samples_in_order():
    data = dataclasses.replace(DATA, batch_size=5)
    batches = list(eval_batches(SAMPLES, TOK, CFG, data))
    assert len(batches) == 3 and all(b["tokens"].shape[0] == 5 for b in batches)
    last = batches[-1]
    assert (last["mask"][2:] == 0).all() and (last["doc_labels"][2:] == 0).all()
    fn = StepBatches(SAMPLES, TOK, CFG, dataclasses.replace(data, shuffle=False))
    assert fn.indices(0).tolist() == list(range(5))
    np.testing.assert_array_equal(batches[0]["tokens"], fn.batch(0)["tokens"])


@pytest.mark.slow
def test_worker_processes_give_the_same_batches():
    straight = _take(make_train_iterator(SAMPLES, TOK, CFG, DATA, seed=9), 3)
    it = make_train_iterator(SAMPLES, TOK, CFG, dataclasses.replace(DATA, worker_count=1),
                             seed=9)
    try:
        assert _equal([{k: np.array(v) for k, v in b.items()} for b in _take(it, 3)], straight)
    finally:
        it.close()
