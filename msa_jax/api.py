"""The public model object: `msa_jax.from_pretrained(path)` -> MSAModel.

    model = msa_jax.from_pretrained("ckpt/MSA-4B", dtype="bfloat16")
    bank = model.encode_memory(["first document ...", "second ..."])
    answer = model.ask("What does the second document say?", bank)
    answer.text, answer.rounds[0].routing      # routed documents per router layer, with scores

A plain Qwen3 checkpoint works too (`model(input_ids)`, `model.generate(...)`); pass `msa=MSAConfig(...)`
to upgrade it to MSA (router projections initialised as the reference does).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Collection, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from msa_jax.atomic import claim
from msa_jax.config import MSAConfig, ModelConfig
from msa_jax.convert import load_pretrained, save_pretrained
from msa_jax.data.corpus import Document
from msa_jax.data.template import chat_prefix
from msa_jax.data.tokenizer import check_positions, check_token_ids, load_tokenizer
from msa_jax.errors import InputError
from msa_jax.inference.generate import bucket, generate as generate_tokens
from msa_jax.inference.constrain import next_state_table
from msa_jax.inference.interleave import (DOC_ID, Answer, PromptTemplate, memory_interleave,
                                        question_row)
from msa_jax.inference.memory_generate import (LayerChoice, QueryRow, append_block,
                                               generate_from_memory)
from msa_jax.inference.generate import sample_tokens
from msa_jax.inference.sampling import Sampling
from msa_jax.memory.bank import BankError, MemoryBank
from msa_jax.memory.encoder import DocInput, encode_documents
from msa_jax.memory.fingerprint import mismatch, model_fingerprint
from msa_jax.model.cache import empty_cache, grow_cache, step_times
from msa_jax.model.decode import forward_step, logits_of
from msa_jax.model.params import init_params
from msa_jax.sharding import use_mesh


@functools.partial(jax.jit, static_argnames=("cfg",))
def _logits(cfg: ModelConfig, params, tokens, positions):
    b, t = tokens.shape
    cache = empty_cache(cfg, b, t)
    k_time, q_time = step_times(cache.index, jnp.ones_like(tokens))
    h, _, _ = forward_step(cfg, params, cache, tokens, positions, k_time, q_time)
    return logits_of(cfg, params, h)


class MSAModel:
    """A Qwen3 / MSA model: config, parameters (a plain pytree) and an optional tokenizer."""

    def __init__(self, cfg: ModelConfig, params, tokenizer=None,
                 template: PromptTemplate = PromptTemplate(), name: str | None = None):
        self.cfg, self.params, self.tokenizer, self.template = cfg, params, tokenizer, template
        self.name = name  # where it was loaded from (named in errors)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str, dtype: str | None = None, msa: MSAConfig | None = None,
                        **overrides: Any) -> "MSAModel":
        """Load a Hugging Face Qwen3 or upstream MSA checkpoint directory (safetensors)."""
        cfg, params = load_pretrained(path, dtype=dtype, msa=msa, **overrides)
        try:
            tokenizer = load_tokenizer(path)
        except (FileNotFoundError, ValueError, ImportError):
            tokenizer = None
        if cfg.is_msa and not cfg.msa.prefix_token_ids and tokenizer is not None:
            # upstream checkpoints do not store the chat prefix: tokenize the reference's
            cfg = cfg.replace(msa=dataclasses.replace(cfg.msa,
                                                      prefix_token_ids=chat_prefix(tokenizer)))
        return cls(cfg, params, tokenizer, name=path)

    @classmethod
    def random(cls, cfg: ModelConfig, seed: int = 0, tokenizer=None) -> "MSAModel":
        return cls(cfg, init_params(cfg, seed), tokenizer)

    def save_pretrained(self, path: str, overwrite: bool = False, dtype: str | None = None,
                        source: str | None = None):
        """Write a Hugging Face directory, atomically; tokenizer files are copied from `source`,
        else saved from the model's tokenizer."""
        tok = self.tokenizer if source is None else None
        with claim(path, overwrite):  # a locked, existing or unwritable path fails before the copy
            return save_pretrained(path, self.cfg, self.params, dtype=dtype, overwrite=overwrite,
                                   copy_from=source, write_extra=tok.save if tok else None)

    # -- plain language model ----------------------------------------------------------------------
    def __call__(self, input_ids, positions=None) -> jax.Array:
        """input_ids [B, T] (or [T]) -> logits [B, T, V] float32 (causal, no memory)."""
        ids = jnp.asarray(check_token_ids(input_ids, self.cfg.vocab_size, "input_ids"), jnp.int32)
        if ids.ndim == 1:
            ids = ids[None]
        if positions is None:
            check_positions(ids.shape[1], self.cfg.max_position_embeddings, "input_ids")
            positions = jnp.broadcast_to(jnp.arange(ids.shape[1], dtype=jnp.int32), ids.shape)
        return _logits(self.cfg, self.params, ids, jnp.asarray(positions, jnp.int32))

    def _check_text_length(self, text: str, what: str, room: int | None = None):
        """Refuse, before tokenizing, a text that cannot fit in `room` positions (default: all
        the model has), where the tokenizer bounds the characters per token."""
        tok = self.tokenizer
        if tok is None:
            raise InputError("this model has no tokenizer: pass token ids instead of text")
        room = self.cfg.max_position_embeddings if room is None else room
        per_token = tok.max_token_chars
        if per_token is not None and len(text) > max(room, 0) * per_token:
            raise InputError(f"{what} has {len(text):,} characters, more than {max(room, 0):,} "
                             f"tokens of at most {per_token} characters can hold (the model's "
                             f"max_position_embeddings is {self.cfg.max_position_embeddings:,})")

    def _encode_text(self, text: str, allow_special: bool = False, what: str = "the text",
                     room: int | None = None) -> list[int]:
        """Token ids of `text`, each checked to be in the model's vocabulary. A text that cannot
        fit in `room` positions (default: all the model has) is refused by its length before it
        is tokenized, where the tokenizer bounds the characters per token."""
        self._check_text_length(text, what, room)
        ids = self.tokenizer.encode(text, allow_special=allow_special)
        check_token_ids(ids, self.cfg.vocab_size, what)
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Token ids -> text; ids beyond the tokenizer's vocabulary (a model vocabulary padded
        past it) are dropped."""
        if self.tokenizer is None:
            raise InputError("this model has no tokenizer: it works on token ids")
        n = self.tokenizer.vocab_size
        return self.tokenizer.decode([i for i in ids if 0 <= i < n], skip_special=skip_special)

    def generate(self, prompts, max_new_tokens: int = 32, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, eos_ids: Sequence[int] | None = None):
        """Prompts (str, list of str, token ids or a list of them) -> continuations (same kind)."""
        single = isinstance(prompts, str) or (len(prompts) > 0 and isinstance(prompts[0], int))
        batch = [prompts] if single else list(prompts)
        as_text = isinstance(batch[0], str)
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        room = self.cfg.max_position_embeddings - max_new_tokens
        ids = [self._encode_text(p, what=f"prompt {i}", room=room) if as_text else
               check_token_ids(p, self.cfg.vocab_size, f"prompt {i}").tolist()
               for i, p in enumerate(batch)]
        for i, p in enumerate(ids):
            if not p:
                raise InputError(f"prompt {i} is empty")
            check_positions(len(p) + max_new_tokens, self.cfg.max_position_embeddings,
                            f"prompt {i} ({len(p):,} tokens) + max_new_tokens {max_new_tokens:,}",
                            "shorten the prompt or lower max_new_tokens")
        out = generate_tokens(self.cfg, self.params, ids, max_new_tokens,
                              Sampling(temperature, top_p, seed), eos_ids)
        if as_text:
            out = [self.decode(o) for o in out]
        return out[0] if single else out

    # -- memory ----------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """Hash of the settings and weights a bank depends on (cached per params pytree, so it
        follows `self.params` when they are replaced)."""
        return model_fingerprint(self.cfg, self.params)

    def _doc_inputs(self, docs) -> list[DocInput]:
        if isinstance(docs, Mapping):
            docs = [Document(str(k), text=v) for k, v in docs.items()]
        out = []
        for i, d in enumerate(docs):
            if isinstance(d, DocInput):
                out.append(d)
                continue
            if isinstance(d, str):
                d = Document(str(i), text=d)
            elif not isinstance(d, Document):
                d = Document(str(i), tokens=tuple(int(t) for t in d))
            if d.tokens is not None:
                out.append(DocInput(d.id, tuple(d.tokens), d.text))
            else:
                wrapped = self.template.format_document(d.id, d.text)
                ids = self._encode_text(wrapped, True, f"document {d.id!r} (#{i})")
                out.append(DocInput(d.id, tuple(ids), d.text))
        return out

    def encode_memory(self, docs, bank: MemoryBank | None = None, block_tokens: int | None = None,
                      journal: str | None = None, progress: bool = True,
                      dtype: str | None = None, routing_dtype: str | None = None,
                      devices=None) -> MemoryBank:
        """Encode documents (texts, token-id lists, `Document`s, or {id: text}) into a bank
        (a new one, or appended to `bank`). Text is wrapped as the reference does
        (`self.template.document`, msa_jax/data/template.py). dtype: of a new bank's tiers
        (default: the model's compute dtype); routing_dtype: of its routing tier if not dtype
        (float32, bfloat16, or int8: per-chunk scaled, msa_jax.memory.quantize). devices: None,
        "local" (blocks spread over every local device, e.g. one CPU device per core) or a list
        (msa_jax.memory.encoder.encode_devices)."""
        self.require_msa("encode memory")
        return encode_documents(self.cfg, self.params, self._doc_inputs(docs), bank=bank,
                                block_tokens=block_tokens, journal=journal,
                                show_progress=progress, dtype=dtype,
                                routing_dtype=routing_dtype, devices=devices)

    def require_msa(self, action: str = "use a memory bank"):
        """BankError naming the model and how to upgrade it, if it is a plain Qwen3 model."""
        if self.cfg.is_msa:
            return
        name = f"model {self.name!r}" if self.name else "this model"
        src = self.name or "QWEN3_DIR"
        raise BankError(
            f"{name} is a plain Qwen3 model (no MSA config, no router layers): it cannot {action}; "
            f"upgrade it with `msa-jax convert --src={src} --dst=MSA_DIR --router_layers=i,j,...` "
            f"or from_pretrained(..., msa=msa_jax.MSAConfig(router_layers=(i, j, ...)))")

    def _check_query_positions(self, tokens: int, what: str):
        """Query rows start at position msa.query_offset: `tokens` more must fit after it."""
        offset = self.cfg.msa.query_offset
        check_positions(offset + tokens, self.cfg.max_position_embeddings,
                        f"{what} (query offset {offset} + {tokens:,} tokens)",
                        "shorten the question or lower max_new_tokens / answer_tokens / "
                        "max_rounds")

    def check_bank(self, bank: MemoryBank):
        self.require_msa("read a memory bank")
        if bank.spec.fingerprint != self.fingerprint:
            raise BankError(mismatch("this memory bank", bank.spec.fingerprint, self.fingerprint,
                                     "its answers would be wrong; encode the documents again "
                                     "with this model"))
        if bank.num_docs == 0:
            raise BankError("the memory bank holds no documents")

    def _choices(self, bank: MemoryBank, choices: list[LayerChoice]) -> list[LayerChoice]:
        """Bank slots -> document ids."""
        return [LayerChoice(c.layer, [bank.doc_ids[s] for s in c.docs], c.scores)
                for c in choices]

    def ask_tokens(self, rows: Sequence[QueryRow], bank: MemoryBank, max_new_tokens: int = 32,
                   sampling: Sampling = Sampling(), stop_ids: Sequence[int] = (),
                   placement=None):
        """Token-level stage 2 + decode for a batch of query rows.
        Returns (new tokens per row, routed documents per row and router layer). With a
        `placement` the model runs under its mesh (its activation constraints bind to it)."""
        self.check_bank(bank)
        for i, row in enumerate(rows):
            check_token_ids(row.tokens, self.cfg.vocab_size, f"query row {i}")
            self._check_query_positions(len(row.tokens) + max_new_tokens, f"query row {i}")
        view, select, fetch = _placement_of(self.cfg, bank, placement)
        with use_mesh(_mesh_of(placement)):
            new, pre = generate_from_memory(
                self.cfg, self.params, view, jnp.asarray(bank.prefix_k),
                jnp.asarray(bank.prefix_v), rows, max_new_tokens, sampling, stop_ids, select,
                fetch)
        return new, [self._choices(bank, c) for c in pre.choices]

    def ask(self, question: str, bank: MemoryBank, interleave: bool = True, max_rounds: int = 4,
            max_new_tokens: int = 64, answer_tokens: int = 128, temperature: float = 0.0,
            top_p: float = 1.0, seed: int = 0, placement=None,
            constrain_ids: bool = False) -> Answer:
        """Answer a question from the memory. With `interleave`, Memory Interleave rounds
        retrieve documents by id and re-inject their text before answering; without, one
        routed prefill and the answer. `Answer.rounds[i].routing` lists, per router layer, the
        documents chosen and their scores. With `constrain_ids`, a round may only write
        "[id]" + the round end for one document that round routed (and not injected before),
        or end retrieval: decoding is masked to those responses (constrain.py); the
        reference decodes freely, the default."""
        self.require_msa("answer from a memory bank")
        if not question.strip():
            raise InputError("the question is empty")
        self.check_bank(bank)
        sampling = Sampling(temperature, top_p, seed)
        # refused by its length before it is tokenized when it cannot fit (the exact check is on
        # the query row, below and in every Memory Interleave round)
        self._check_text_length(question, "the question",
                                self.cfg.max_position_embeddings - self.cfg.msa.query_offset)
        if not interleave:
            row = question_row(_KnownIds(self), self.template, question, interleave=False)
            stop = [self.tokenizer.token_id(self.template.answer_end)] \
                if self.template.answer_end in self.tokenizer.special_tokens else []
            new, choices = self.ask_tokens([row], bank, answer_tokens, sampling,
                                           stop + list(self.tokenizer.eos_ids), placement)
            return Answer(self.decode(new[0]).strip(), [], choices[0])
        texts = _BankTexts(self, bank)  # decodes only the documents a round injects
        intro = self._encode_text(self.template.answer_intro.format(question=question), True,
                                  "the answer prompt")
        budget = bucket(max(max_new_tokens, answer_tokens), 8)  # one decode loop for all rounds
        session = _InterleaveSession(self, bank, sampling, placement, budget,
                                     reserve=bucket(len(intro), 8) + budget,
                                     after=max_new_tokens + len(intro) + answer_tokens,
                                     constrain_ids=constrain_ids)
        with use_mesh(_mesh_of(placement)):  # the model's activation constraints bind to it
            return memory_interleave(session, _KnownIds(self), question, texts, self.template,
                                     max_rounds, max_new_tokens, answer_tokens)


class _BankTexts(Mapping):
    """Document id -> original text (stored, else decoded from its tokens), read on demand: a
    question touches only the documents it injects, not every document of the bank."""

    def __init__(self, model: MSAModel, bank: MemoryBank):
        self.model, self.bank = model, bank

    def _slot(self, doc_id) -> int | None:
        try:
            return self.bank.slot_of(doc_id)
        except BankError:
            return None

    def __contains__(self, doc_id) -> bool:
        return isinstance(doc_id, str) and self._slot(doc_id) is not None

    def __getitem__(self, doc_id: str) -> str:
        slot = self._slot(doc_id) if isinstance(doc_id, str) else None
        if slot is None:
            raise KeyError(doc_id)
        text = self.bank.doc_texts[slot]
        return text or self.model.decode(self.bank.doc_tokens[slot], False)

    def __iter__(self) -> Iterator[str]:
        return (self.bank.doc_ids[s] for s in self.bank.live_slots())

    def __len__(self) -> int:
        return self.bank.num_docs


class _KnownIds:
    """The model's tokenizer, encoding only to ids the model has and decoding only ids the
    tokenizer knows (see MSAModel._encode_text, MSAModel.decode)."""

    def __init__(self, model: MSAModel):
        self.model, self.tok = model, model.tokenizer

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        return self.model._encode_text(text, allow_special, "the query text")

    def decode(self, ids, skip_special: bool = False) -> str:
        return self.model.decode(ids, skip_special)

    def token_id(self, token: str) -> int:
        return self.tok.token_id(token)


class _InterleaveSession:
    """RoundModel over an MSAModel and a bank; keeps the last round's cache for the answer."""

    def __init__(self, model: MSAModel, bank: MemoryBank, sampling: Sampling, placement,
                 budget: int, reserve: int, after: int, constrain_ids: bool = False):
        self.model, self.bank, self.sampling, self.placement = model, bank, sampling, placement
        self.constrain_ids = constrain_ids
        self.budget, self.reserve = budget, reserve  # decode-loop size; room for the answer
        self.after = after  # positions a round's row is followed by: generation, intro, answer
        self.last = None  # (cache, next positions)
        self.round = 0

    def _routed_responses(self, pre, injected: Collection[str]) -> np.ndarray:
        """Next-state table of what a constrained round may write: "[id]" + the round end for
        each document the round routed (any router layer) and not injected before, or the end
        of retrieval."""
        m, tpl = self.model, self.model.template
        routed = dict.fromkeys(self.bank.doc_ids[s] for c in pre.choices[0] for s in c.docs)
        fresh = [d for d in routed if d not in injected and DOC_ID.fullmatch(f"[{d}]")]
        responses = [tpl.retrieval_response((d,)) for d in fresh]
        responses.append(tpl.retrieval_response((), last=True))
        return next_state_table([m._encode_text(r, True, "a constrained response")
                                 for r in responses], m.cfg.vocab_size)

    def retrieve_round(self, row: QueryRow, max_new_tokens: int, stop_ids: Sequence[int],
                       injected: Collection[str] = ()):
        m = self.model
        self.round += 1
        m._check_query_positions(len(row.tokens) + self.after,
                                 f"Memory Interleave round {self.round} (the question, the "
                                 f"injected documents, the generation and the answer)")
        view, select, fetch = _placement_of(m.cfg, self.bank, self.placement)
        new, pre = generate_from_memory(
            m.cfg, m.params, view, jnp.asarray(self.bank.prefix_k),
            jnp.asarray(self.bank.prefix_v), [row], max_new_tokens, self.sampling, stop_ids,
            select, fetch, self.budget, self.reserve,
            (lambda pre: self._routed_responses(pre, injected)) if self.constrain_ids else None)
        self.last = (pre.cache, pre.positions + len(new[0]))
        return new[0], m._choices(self.bank, pre.choices[0])

    def continue_round(self, block: Sequence[int], max_new_tokens: int,
                       stop_ids: Sequence[int]):
        m = self.model
        cache, pos = self.last
        cache = grow_cache(cache, bucket(len(block), 8) + bucket(max_new_tokens, 8))
        logits, cache, pos = append_block(m.cfg, m.params, cache, pos, [list(block)])
        new, _ = sample_tokens(m.cfg, m.params, cache, logits, pos, max_new_tokens,
                               self.sampling, stop_ids, m.cfg.pad_token_id or 0, self.budget)
        return new[0]


def _mesh_of(placement):
    """The mesh a memory-parallel placement runs on (None: one device, no mesh)."""
    return None if placement is None else placement.mesh


def _placement_of(cfg, bank: MemoryBank, placement):
    """(MemoryView, select fn, fetch fn) for a bank: single device, or a memory-parallel
    placement (msa_jax.memory.parallel) that shards the tiers."""
    if placement is None:
        return bank.view(unit_keys=cfg.msa.inference_cosine), None, None
    return (placement.view(bank, unit_keys=cfg.msa.inference_cosine), placement.select,
            placement.fetch)


def from_pretrained(path: str, dtype: str | None = None, msa: MSAConfig | None = None,
                    **overrides: Any) -> MSAModel:
    """Load a Hugging Face Qwen3 or upstream MSA checkpoint (see MSAModel.from_pretrained)."""
    return MSAModel.from_pretrained(path, dtype=dtype, msa=msa, **overrides)
