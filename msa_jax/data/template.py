"""The strings of MSA's prompts, in one place (docs/msa.md §3, §5): the Qwen3 chat tokens, the
reference's Memory Interleave markers, the fixed chat prefix and the document wrapper.

Everything that builds or parses a prompt (inference, api, cli, the tokenizers, the trainer)
imports them from here. A leaf: plain Python, no JAX.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

PAD = "<|pad|>"
END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
OBJECT_REF_START = "<|object_ref_start|>"
OBJECT_REF_END = "<|object_ref_end|>"  # ends a Memory Interleave round
END_OF_RETRIEVE = "<End-of-Retrieve>"  # the model has retrieved enough

# The special tokens the templates use, in ByteTokenizer id order (id 0 = PAD): never reorder,
# saved byte tokenizers depend on it.
SPECIAL_TOKENS = (PAD, END_OF_TEXT, IM_START, IM_END, OBJECT_REF_START, OBJECT_REF_END,
                  END_OF_RETRIEVE)

# The fixed chat prefix every query attends to (MSA-4B: 3 Qwen3 tokens); its token ids are
# `MSAConfig.prefix_token_ids`.
CHAT_HEAD = IM_START + "user\n"


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """The reference's strings for MSA-4B (Qwen3 chat tokens). `header` is the fixed text the
    reference puts before the question (not published with the paper; empty by default)."""

    header: str = ""
    prefix: str = CHAT_HEAD
    question_suffix: str = "\nPlease return all documents related to the question\n"
    tail: str = IM_END + "\n"
    response_head: str = IM_START
    round_end: str = OBJECT_REF_END
    end_of_retrieve: str = END_OF_RETRIEVE
    answer_end: str = IM_END
    document: str = IM_START + "[{id}]. {text}[{id}]" + IM_END
    injected: str = "[{id}]. {text}\n"
    answer_intro: str = IM_START + "The user's question is: {question}\n" + OBJECT_REF_END
    answer_prefix: str = "The answer to the question is:"

    def format_document(self, doc_id: str, text: str) -> str:
        return self.document.format(id=doc_id, text=text)

    def retrieval_response(self, doc_ids, last: bool = False) -> str:
        """The generative-retrieval response: "[4][9]" then the round end, or `end_of_retrieve`
        when `last` (the model is done retrieving: the answer follows)."""
        return "".join(f"[{i}]" for i in doc_ids) + (self.end_of_retrieve if last
                                                     else self.round_end)


class _Encoder(Protocol):
    def encode(self, text: str, allow_special: bool = False) -> list[int]: ...


def chat_prefix(tokenizer: _Encoder,
                template: PromptTemplate = PromptTemplate()) -> tuple[int, ...]:
    """Token ids of the template's chat prefix (CHAT_HEAD) in `tokenizer`."""
    return tuple(tokenizer.encode(template.prefix, allow_special=True))
