"""The training input pipeline on grain: a stateless step -> batch mapping (docs/training_data.md).

The batch of training step `s` is a pure function of (samples, seed, s, process): global
element e = s * G + j (G = the global batch size, j < G) is sample
`index_shuffle(e mod N)` of epoch e // N (grain's Feistel permutation, reseeded each epoch);
process p of P takes j in [p * G/P, (p + 1) * G/P), so the processes' batches are disjoint and
together are the global batch, whatever P is. The shape (L, M) of step s is the smallest bucket
holding every sample of the *global* batch (so all processes agree), from a size table computed
once when the pipeline is built (which also validates every sample up front).

Resuming needs only the step: `make_train_iterator(..., start_step=s)` yields exactly the
batches a straight run yields from step s on. grain's own iterator state (`get_state` /
`set_state`, which orbax can checkpoint through grain's checkpoint handler) works too.
Background work: `worker_count` grain worker processes (`mp_prefetch`), or with 0 a reader
thread; either way `prefetch` batches are prepared ahead. The output does not depend on them.

API (stable; the trainer relies on it):
  make_train_iterator(source, tokenizer, cfg, data=PipelineConfig(), seed=0, start_step=0,
                      process_index=0, process_count=1, template=PromptTemplate())
    -> a grain DatasetIterator of dicts of numpy arrays: `packing.BATCH_FIELDS`, i.e.
       tokens, positions, roles, mask, labels int32 [B, L], doc_labels int32 [B, M] and
       num_docs (int32 scalar = M, the static `num_docs` of `train_forward`); B = G / P.
  StepBatches: the mapping itself (`batch(step)`, `indices(step)`, `shape(step)`).
  eval_batches(samples, tokenizer, cfg, data): the samples in order, in batches of the
    process-local size, the last one padded with empty rows (mask 0, no positives).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator, Sequence

import grain
import numpy as np

from msa_jax.config import ModelConfig
from msa_jax.errors import ConfigError
from msa_jax.inference.interleave import PromptTemplate
from msa_jax.training.packing import (Buckets, TokenizedSample, check_sample, pack_batch,
                                      tokenize_sample)
from msa_jax.training.samples import Sample, SampleError, load_samples

_LAST_STEP = 2 ** 62  # the iterator is endless; steps beyond any run


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """batch_size: global batch (all processes together); length_buckets / doc_buckets: the
    allowed L and M; worker_count: grain worker processes (0 = a reader thread); prefetch:
    batches prepared ahead (per worker; at least 1)."""

    batch_size: int = 8
    length_buckets: tuple[int, ...] = (512, 1024, 2048)
    doc_buckets: tuple[int, ...] = (16, 32)
    shuffle: bool = True
    worker_count: int = 0
    prefetch: int = 2
    routing_rows: int = 0  # the most routing tokens a sample may have (0 = any): Buckets
    max_segment: int = 0  # the longest document (0 = any): Buckets
    max_active: int = 0  # the longest question row + response (0 = any): Buckets

    def __post_init__(self):
        for name in ("batch_size",):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("worker_count", "prefetch"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        object.__setattr__(self, "length_buckets", tuple(self.length_buckets))
        object.__setattr__(self, "doc_buckets", tuple(self.doc_buckets))

    @property
    def buckets(self) -> Buckets:
        return Buckets(self.length_buckets, self.doc_buckets, self.routing_rows,
                       self.max_segment, self.max_active)


def _head(cfg: ModelConfig) -> tuple[int, ...]:
    head = tuple(cfg.msa.prefix_token_ids)
    if not head:
        raise ConfigError("cfg.msa.prefix_token_ids is empty: set it to the token ids of the "
                         "template prefix (PromptTemplate.prefix) that inference uses")
    return head


def _as_samples(source: Sequence[Sample] | str | os.PathLike) -> Sequence[Sample]:
    if isinstance(source, (str, os.PathLike)):
        return load_samples(source)
    if len(source) == 0:
        raise SampleError("the training source holds no samples")
    return source


class StepBatches:
    """step -> this process's packed batch (picklable, so grain workers can run it)."""

    def __init__(self, source: Sequence[Sample] | str | os.PathLike, tokenizer,
                 cfg: ModelConfig, data: PipelineConfig = PipelineConfig(), seed: int = 0,
                 process_index: int = 0, process_count: int = 1,
                 template: PromptTemplate = PromptTemplate()):
        if not 0 <= process_index < process_count:
            raise ConfigError(f"process_index {process_index} is not in [0, process_count="
                             f"{process_count})")
        if data.batch_size % process_count:
            raise ConfigError(f"data.batch_size {data.batch_size} is not divisible by "
                             f"process_count {process_count}")
        if not 0 <= seed < 2 ** 32:
            raise ConfigError(f"seed must be in [0, 2**32), got {seed}")
        self.samples = _as_samples(source)
        self.tokenizer, self.template, self.data, self.seed = tokenizer, template, data, seed
        self.head, self.query_offset = _head(cfg), cfg.msa.query_offset
        self.pad_id, self.vocab_size = tokenizer.pad_id, cfg.vocab_size
        self.local = data.batch_size // process_count
        self.first = process_index * self.local
        self.sizes = self._sizes()

    def _sizes(self) -> np.ndarray:
        """[N, 2] (tokens, documents) per sample; raises SampleError on a sample that fits no
        bucket or the vocabulary."""
        buckets = self.data.buckets
        return np.asarray([check_sample(self.tokenize(s), len(self.head), buckets,
                                        self.vocab_size) for s in self.samples], np.int64)

    def tokenize(self, sample: Sample) -> TokenizedSample:
        return tokenize_sample(sample, self.tokenizer, self.template)

    def _element(self, e: int) -> int:
        n = len(self.samples)
        epoch, i = divmod(int(e), n)
        if not self.data.shuffle:
            return i
        seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
        return grain.experimental.index_shuffle(i, max_index=n - 1, seed=seed, rounds=4)

    def global_indices(self, step: int) -> np.ndarray:
        """Sample indices of the global batch of `step` [G]."""
        g = self.data.batch_size
        return np.asarray([self._element(step * g + j) for j in range(g)], np.int64)

    def indices(self, step: int) -> np.ndarray:
        """Sample indices of this process's part of the batch of `step` [G / P]."""
        return self.global_indices(step)[self.first:self.first + self.local]

    def shape(self, step: int) -> tuple[int, int]:
        """(L, M) of `step`: the smallest bucket holding the whole global batch."""
        length, docs = self.sizes[self.global_indices(step)].max(0)
        return self.data.buckets.pick(int(length), int(docs))

    def batch(self, step: int) -> dict[str, np.ndarray]:
        length, docs = self.shape(step)
        samples = [self.tokenize(self.samples[i]) for i in self.indices(step)]
        return pack_batch(samples, self.head, self.query_offset, self.pad_id, length, docs,
                          self.vocab_size)

    __call__ = batch


def make_train_iterator(source: Sequence[Sample] | str | os.PathLike, tokenizer,
                        cfg: ModelConfig, data: PipelineConfig = PipelineConfig(), seed: int = 0,
                        start_step: int = 0, process_index: int = 0, process_count: int = 1,
                        template: PromptTemplate = PromptTemplate()) -> grain.DatasetIterator:
    """The endless iterator of this process's batches from `start_step` on (see the module
    docstring). Close it (`it.close()`, where available) to stop grain's workers early."""
    fn = StepBatches(source, tokenizer, cfg, data, seed, process_index, process_count, template)
    return batch_iterator(fn, start_step)


def batch_iterator(fn: StepBatches, start_step: int = 0) -> grain.DatasetIterator:
    """`make_train_iterator` of an existing `StepBatches` (its samples already checked): the
    endless iterator of `fn(step)` from `start_step` on, with `fn.data`'s prefetch and workers."""
    if start_step < 0:
        raise ConfigError(f"start_step must be >= 0, got {start_step}")
    data = fn.data
    ds = grain.MapDataset.range(start_step, _LAST_STEP).map(fn)
    read = grain.ReadOptions(num_threads=1, prefetch_buffer_size=max(data.prefetch, 1))
    ds = ds.to_iter_dataset(read)
    if data.worker_count:
        _absl_flags_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=data.worker_count, per_worker_buffer_size=max(data.prefetch, 1)))
    return iter(ds)


def _absl_flags_parsed() -> None:
    """grain's worker start reads an absl flag, which fails unless absl flags were parsed
    (google/grain#1355); outside an absl app, mark them parsed (their defaults stand)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def eval_batches(samples: Sequence[Sample], tokenizer, cfg: ModelConfig,
                 data: PipelineConfig = PipelineConfig(), process_index: int = 0,
                 process_count: int = 1, template: PromptTemplate = PromptTemplate()
                 ) -> Iterator[dict[str, np.ndarray]]:
    """`samples` in order (not shuffled, each once), batched like `make_train_iterator`; the
    last batch is padded with empty rows (mask 0, doc_labels 0), which no loss counts."""
    fn = StepBatches(samples, tokenizer, cfg, dataclasses.replace(data, shuffle=False), 0,
                     process_index, process_count, template)
    n, g = len(fn.samples), data.batch_size
    for start in range(0, n, g):
        length, docs = data.buckets.pick(*map(int, fn.sizes[start:start + g].max(0)))
        mine = range(start + fn.first, min(start + fn.first + fn.local, n))
        yield pack_batch([fn.tokenize(fn.samples[e]) for e in mine], fn.head, fn.query_offset,
                         fn.pad_id, length, docs, fn.vocab_size, rows=fn.local)
