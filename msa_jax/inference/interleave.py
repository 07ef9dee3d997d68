"""Memory Interleave (docs/msa.md §5): generate document ids -> inject their original text ->
re-route with the question plus the injected text -> ... -> answer.

The loop is written against a small `RoundModel` interface (so a scripted fake can test it) and a
tokenizer; `msa_jax.api.MSAModel` provides the real one. Rounds are adaptive (the model decides
when it has retrieved enough) and bounded by `max_rounds`. The strings come from
`PromptTemplate` (msa_jax/data/template.py, the one source of the prompt strings).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Collection, Mapping, Protocol, Sequence

from msa_jax.data.template import PromptTemplate
from msa_jax.errors import InputError
from msa_jax.inference.memory_generate import CONTEXT, ROUTING, LayerChoice, QueryRow


DOC_ID = re.compile(r"\[([^\[\]\n]{1,64})\]")


class Tokenizer(Protocol):
    def encode(self, text: str, allow_special: bool = False) -> list[int]: ...
    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str: ...
    def token_id(self, token: str) -> int: ...


class RoundModel(Protocol):
    def retrieve_round(self, row: QueryRow, max_new_tokens: int, stop_ids: Sequence[int],
                       injected: Collection[str] = ()) -> tuple[list[int], list[LayerChoice]]:
        """Stage-2 prefill of `row` (routing anew) and decode; returns (new tokens, choices).
        `injected`: the ids injected in earlier rounds (a model that constrains its response
        to the routed documents does not offer them again)."""

    def continue_round(self, block: Sequence[int], max_new_tokens: int,
                       stop_ids: Sequence[int]) -> list[int]:
        """Append `block` to the last round's cache (no re-routing) and decode."""


@dataclasses.dataclass
class Round:
    generated: str  # what the model wrote this round
    requested_ids: list[str]  # document ids it named
    injected_ids: list[str]  # those injected (known and not injected before)
    routing: list[LayerChoice]  # per router layer: bank slots and scores


@dataclasses.dataclass
class Answer:
    text: str
    rounds: list[Round]
    answer_routing: list[LayerChoice] | None = None  # routing of a single-pass (no-interleave) ask


def _encode(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, allow_special=True)


def _stop_ids(tok: Tokenizer, names: Sequence[str]) -> list[int]:
    out = []
    for name in names:
        try:
            out.append(tok.token_id(name))
        except KeyError:
            pass
    return out


def requested_ids(text: str, tpl: PromptTemplate = PromptTemplate()) -> list[str]:
    """The document ids a round's generated text names (`[id]`, before `<End-of-Retrieve>`)."""
    return DOC_ID.findall(text.split(tpl.end_of_retrieve)[0])


def final_answer(text: str, tpl: PromptTemplate = PromptTemplate()) -> str:
    """The decoded answer step without surrounding space and the "The answer ... is:" prefix."""
    text = text.strip()
    if text.startswith(tpl.answer_prefix):
        text = text[len(tpl.answer_prefix):].strip()
    return text


def question_row(tok: Tokenizer, tpl: PromptTemplate, question: str,
                 history: Sequence[tuple[str, str]] = (), interleave: bool = True) -> QueryRow:
    """The query row of a round: question (routing) + instruction, then each earlier round's
    generation and injected text; the most recent injected text routes too."""
    parts: list[tuple[list[int], int]] = []
    if tpl.header:
        parts.append((_encode(tok, tpl.header), CONTEXT))
    parts.append((_encode(tok, question), ROUTING))
    if interleave:
        parts.append((_encode(tok, tpl.question_suffix), CONTEXT))
    for i, (generated, injected) in enumerate(history):
        parts.append((_encode(tok, generated), CONTEXT))
        role = ROUTING if i == len(history) - 1 else CONTEXT
        parts.append((_encode(tok, injected), role))
    parts.append((_encode(tok, tpl.tail + tpl.response_head), CONTEXT))
    return QueryRow.build(*parts)


def memory_interleave(model: RoundModel, tok: Tokenizer, question: str,
                      documents: Mapping[str, str], tpl: PromptTemplate = PromptTemplate(),
                      max_rounds: int = 4, max_new_tokens: int = 64,
                      answer_tokens: int = 128) -> Answer:
    """Run Memory Interleave for one question. `documents` maps document id -> original text; it
    is only probed (`in`, `[]`) for the ids the model names, so it may be a lazy mapping."""
    if max_rounds < 1:
        raise InputError(f"max_rounds must be >= 1, got {max_rounds}")
    stops = _stop_ids(tok, [tpl.round_end, tpl.end_of_retrieve, tpl.answer_end])
    history: list[tuple[str, str]] = []
    rounds: list[Round] = []
    injected_before: set[str] = set()
    for _ in range(max_rounds):
        row = question_row(tok, tpl, question, history)
        new, routing = model.retrieve_round(row, max_new_tokens, stops, injected_before)
        text = tok.decode(new)
        requested = requested_ids(text, tpl)
        fresh = [d for d in dict.fromkeys(requested) if d in documents and d not in injected_before]
        rounds.append(Round(text, requested, fresh, routing))
        if tpl.end_of_retrieve in text or not fresh:
            break
        injected_before.update(fresh)
        block = "".join(tpl.injected.format(id=d, text=documents[d]) for d in fresh)
        history.append((text, block + tpl.round_end))
    intro = _encode(tok, tpl.answer_intro.format(question=question))
    answer_ids = model.continue_round(intro, answer_tokens, _stop_ids(tok, [tpl.answer_end]))
    return Answer(final_answer(tok.decode(answer_ids, skip_special=True), tpl), rounds)
