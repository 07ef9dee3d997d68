"""Samples -> token ids -> `msa_jax.model.train_forward.TrainBatch` arrays at static shapes.

A packed row reproduces the reference's training layout (the golden fixture
upstream_msa_tiny, inputs.json -> train; docs/training_data.md):

  [template head | document 1 | ... | document n | question row | response] [pads]

- template head: `cfg.msa.prefix_token_ids` (`<|im_start|>user\\n`), role -2, positions 0..h-1;
- document d (1-based, in the sample's order): `PromptTemplate.document` around its text
  (`<|im_start|>[{id}]. {text}[{id}]<|im_end|>`, encoded as `MSAModel.encode_memory` does) or
  its token ids as given; role d; positions restart at 0 in every document;
- question row: exactly what inference routes with, `interleave.question_row` (header, the
  question and, from the second interleave round on, the last injected text with role 0 =
  routing; instruction, earlier generations, template tail and response head with role -1);
- response: the target (`[id]...<|object_ref_end|>`, role -1, labelled) and, with an answer,
  the answer intro (role -1, not labelled) then "The answer to the question is: {answer}"
  and `<|im_end|>` (labelled);
- every token after the documents has position `cfg.msa.query_offset + i` (i = 0, 1, ...);
- labels: the token id on labelled tokens, -100 elsewhere (the LM loss shifts by one);
- pads (right): token pad_id, position 0, role 0, mask 0, label -100;
- doc_labels [B, M]: 1 where in-sample document d = column d - 1 is relevant, 2 where it is
  also what the step reads under `OptimConfig.read="target"` (`TokenizedSample.read`).

Shapes come from a few buckets (`Buckets`): the smallest length L and document count M that
hold every sample of the batch, so a run compiles at most len(lengths) * len(num_docs) shapes.

API (stable; the pipeline and trainer rely on it): `TokenizedSample`, `tokenize_sample`,
`Buckets`, `check_sample`, `pack_batch`, `BATCH_FIELDS`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from msa_jax.errors import ConfigError, LayoutError
from msa_jax.inference.interleave import PromptTemplate, question_row
from msa_jax.model.train_forward import READ_LABEL
from msa_jax.training.losses import IGNORE
from msa_jax.training.samples import Sample, SampleError, retrieval_target

HEAD_ROLE, ACTIVE_ROLE = -2, -1
# The arrays of a packed batch: TrainBatch's fields (int32 [B, L], doc_labels [B, M]) and
# num_docs (the static M of train_forward, an int32 scalar equal to doc_labels.shape[1]).
BATCH_FIELDS = ("tokens", "positions", "roles", "mask", "labels", "doc_labels", "num_docs")


@dataclasses.dataclass(frozen=True)
class TokenizedSample:
    """A sample as token ids: its documents, then the active part (question row + response).

    active_roles: 0 routing (the question), -1 other active tokens, -2 template;
    labelled: whether the LM loss is taken on the active token; relevant: 1-based in-sample
    indices of the positive documents; read: those the step reads when the LM path is given the
    right documents instead of the routed ones (`OptimConfig.read="target"`): the relevant
    documents its target names (`[id]`), or every relevant one when it names none (the answer
    step, whose documents were injected before it); () in a sample built by hand: none.
    """

    id: str
    documents: tuple[tuple[int, ...], ...]
    active: tuple[int, ...]
    active_roles: tuple[int, ...]
    labelled: tuple[bool, ...]
    relevant: tuple[int, ...]
    read: tuple[int, ...] = ()

    def length(self, head_len: int) -> int:
        return head_len + sum(map(len, self.documents)) + len(self.active)


def _response(sample: Sample, tok, tpl: PromptTemplate) -> list[tuple[list[int], bool]]:
    """(token ids, labelled) parts written after the question row."""
    last = sample.answer is not None
    parts = [(tok.encode(_target(sample, tpl), allow_special=True), True)]
    if last:
        intro = tpl.answer_intro.format(question=sample.question)
        parts += [(tok.encode(intro, allow_special=True), False),
                  (tok.encode(f"{tpl.answer_prefix} {sample.answer}")
                   + tok.encode(tpl.answer_end, allow_special=True), True)]
    return parts


def tokenize_sample(sample: Sample, tok, tpl: PromptTemplate = PromptTemplate()
                    ) -> TokenizedSample:
    """`sample` in the layout of the module docstring (documents wrapped like encode_memory)."""
    docs = tuple(d.tokens if d.tokens is not None else
                 tuple(tok.encode(tpl.format_document(d.id, d.text), allow_special=True))
                 for d in sample.documents)
    row = question_row(tok, tpl, sample.question, sample.history)
    active, roles, labelled = list(row.tokens), list(row.roles), [False] * len(row.tokens)
    for ids, is_labelled in _response(sample, tok, tpl):
        active += ids
        roles += [ACTIVE_ROLE] * len(ids)
        labelled += [is_labelled] * len(ids)
    index = {d: i + 1 for i, d in enumerate(sample.doc_ids)}
    relevant = tuple(index[r] for r in sample.relevant_ids)
    target = _target(sample, tpl)
    read = tuple(index[r] for r in sample.relevant_ids if f"[{r}]" in target)
    return TokenizedSample(sample.id, docs, tuple(active), tuple(roles), tuple(labelled),
                           relevant, read or relevant)


def _target(sample: Sample, tpl: PromptTemplate) -> str:
    """The retrieval response the step is trained to write."""
    if sample.target is not None:
        return sample.target
    return retrieval_target(sample.relevant_ids, tpl, last=sample.answer is not None)


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Allowed sequence lengths L and document counts M (each sorted ascending); routing_rows:
    the most routing-query tokens a sample may have (0 = any; set when the loss scores the
    questions against the whole batch from that many tokens: OptimConfig.batch_negatives);
    max_segment / max_active: the most tokens of one document / of the active part (question
    row and response) of a sample (0 = any; OptimConfig.max_segment: banded attention)."""

    lengths: tuple[int, ...] = (512, 1024, 2048)
    num_docs: tuple[int, ...] = (16, 32)
    routing_rows: int = 0
    max_segment: int = 0
    max_active: int = 0

    def __post_init__(self):
        for name in ("lengths", "num_docs"):
            values = tuple(int(v) for v in getattr(self, name))
            if not values or list(values) != sorted(set(values)) or values[0] < 1:
                raise ConfigError(f"Buckets.{name} must be positive, ascending and unique, got "
                                 f"{getattr(self, name)}")
            object.__setattr__(self, name, values)

    def check(self, sample_id: str, length: int, num_docs: int, routing: int = 0,
              segment: int = 0, active: int = 0) -> None:
        """SampleError naming the sample if it fits no bucket (`routing`: its routing tokens;
        `segment`: its longest document; `active`: its question row and response)."""
        if self.max_segment and segment > self.max_segment:
            raise SampleError(f"sample {sample_id!r}: a document of {segment} tokens exceeds "
                              f"max_segment={self.max_segment} (raise optim.max_segment)")
        if self.max_active and active > self.max_active:
            raise SampleError(f"sample {sample_id!r}: its question and target span {active} "
                              f"tokens, more than max_active={self.max_active} (raise "
                              "optim.max_active)")
        if self.routing_rows and routing > self.routing_rows:
            raise SampleError(f"sample {sample_id!r}: {routing} routing-query tokens (question "
                              f"and last injected text) exceed routing_rows="
                              f"{self.routing_rows} (raise optim.batch_negatives)")
        if length > self.lengths[-1]:
            raise SampleError(f"sample {sample_id!r}: {length} tokens (template, documents, "
                              f"question and target) do not fit the largest length bucket "
                              f"{self.lengths[-1]}")
        if num_docs > self.num_docs[-1]:
            raise SampleError(f"sample {sample_id!r}: {num_docs} documents exceed the largest "
                              f"document bucket {self.num_docs[-1]}")

    def pick(self, length: int, num_docs: int) -> tuple[int, int]:
        """The smallest (L, M) holding `length` tokens and `num_docs` documents."""
        return (next(v for v in self.lengths if v >= length),
                next(v for v in self.num_docs if v >= num_docs))


def _row(s: TokenizedSample, head: Sequence[int], query_offset: int):
    """tokens, positions, roles, labels of one sample (unpadded lists)."""
    tokens, positions, roles = list(head), list(range(len(head))), [HEAD_ROLE] * len(head)
    for d, doc in enumerate(s.documents, start=1):
        tokens += doc
        positions += range(len(doc))
        roles += [d] * len(doc)
    labels = [IGNORE] * len(tokens) + [t if lab else IGNORE for t, lab in zip(s.active,
                                                                               s.labelled)]
    tokens += s.active
    positions += range(query_offset, query_offset + len(s.active))
    roles += s.active_roles
    return tokens, positions, roles, labels


def check_sample(s: TokenizedSample, head_len: int, buckets: Buckets,
                 vocab_size: int | None = None) -> tuple[int, int]:
    """(tokens, documents) of `s`; SampleError naming it if it fits no bucket or holds a token
    id outside `vocab_size`."""
    length = s.length(head_len)
    buckets.check(s.id, length, len(s.documents), s.active_roles.count(0),
                  max(map(len, s.documents)), len(s.active))
    if vocab_size is not None:
        top = max(max(map(max, s.documents)), max(s.active))
        if top >= vocab_size:
            raise SampleError(f"sample {s.id!r}: token id {top} is outside the model's "
                              f"vocabulary ({vocab_size})")
    return length, len(s.documents)


def pack_batch(samples: Sequence[TokenizedSample], head: Sequence[int], query_offset: int,
               pad_id: int, length: int, num_docs: int, vocab_size: int | None = None,
               rows: int | None = None) -> dict[str, np.ndarray]:
    """Arrays of `BATCH_FIELDS` for `samples` at shape [rows, length] / [rows, num_docs];
    rows (default len(samples)) beyond the samples are empty (pads, no positives).

    Errors (SampleError) name the sample that does not fit `length` or `num_docs`, or holds a
    token id outside `vocab_size`.
    """
    b = len(samples) if rows is None else rows
    if b < len(samples):
        raise LayoutError(f"rows={rows} cannot hold {len(samples)} samples")
    out = {k: np.zeros((b, length), np.int32) for k in ("tokens", "positions", "roles", "mask")}
    out["tokens"][:] = pad_id
    out["labels"] = np.full((b, length), IGNORE, np.int32)
    out["doc_labels"] = np.zeros((b, num_docs), np.int32)
    fit = Buckets((length,), (num_docs,))  # validates the shape
    for i, s in enumerate(samples):
        check_sample(s, len(head), fit, vocab_size)
        tokens, positions, roles, labels = _row(s, head, query_offset)
        n = len(tokens)
        out["tokens"][i, :n], out["positions"][i, :n] = tokens, positions
        out["roles"][i, :n], out["labels"][i, :n], out["mask"][i, :n] = roles, labels, 1
        out["doc_labels"][i, np.asarray(s.relevant, np.int64) - 1] = 1
        out["doc_labels"][i, np.asarray(s.read, np.int64) - 1] = READ_LABEL
    out["num_docs"] = np.asarray(num_docs, np.int32)
    return out
