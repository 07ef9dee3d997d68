"""Memory Interleave's loop (docs/msa.md §5) driven by a scripted fake model."""

import pytest

from msa_jax.data.tokenizer import ByteTokenizer
from msa_jax.inference.interleave import PromptTemplate, memory_interleave, question_row
from msa_jax.inference.memory_generate import ROUTING, LayerChoice

TOK = ByteTokenizer()
TPL = PromptTemplate()
DOCS = {"1": "Alice was born in Paris.", "4": "Paris is in France.", "7": "Bob likes tea."}


class Scripted:
    """Answers each round with the next scripted text; records what it was shown."""

    def __init__(self, rounds, answer):
        self.rounds, self.answer = list(rounds), answer
        self.rows, self.blocks, self.injected = [], [], []

    def retrieve_round(self, row, max_new_tokens, stop_ids, injected=()):
        self.rows.append(row)
        self.injected.append(set(injected))
        text = self.rounds.pop(0)
        return TOK.encode(text, allow_special=True), [LayerChoice(2, [0], [1.0])]

    def continue_round(self, block, max_new_tokens, stop_ids):
        self.blocks.append(list(block))
        return TOK.encode(self.answer, allow_special=True)


def routed_text(row):
    return TOK.decode([t for t, r in zip(row.tokens, row.roles) if r == ROUTING])


def test_two_hops_then_answer():
    fake = Scripted(["[1]<|object_ref_end|>", "[4]<|object_ref_end|>", "<End-of-Retrieve>"],
                    "The answer to the question is: France<|im_end|>")
    q = "Which country was Alice born in?"
    ans = memory_interleave(fake, TOK, q, DOCS, max_rounds=5)
    assert ans.text == "France"
    assert [r.injected_ids for r in ans.rounds] == [["1"], ["4"], []]
    assert len(fake.rows) == 3
    assert fake.injected == [set(), {"1"}, {"1", "4"}]  # what a constrained round leaves out
    # round 2 routes with the question plus the text injected after round 1, not older text
    assert routed_text(fake.rows[1]) == q + "[1]. Alice was born in Paris.\n<|object_ref_end|>"
    assert routed_text(fake.rows[2]) == q + "[4]. Paris is in France.\n<|object_ref_end|>"
    assert "Alice was born in Paris" in TOK.decode(fake.rows[2].tokens)  # kept as context
    assert TOK.decode(fake.blocks[0]) == TPL.answer_intro.format(question=q)


def test_rounds_are_bounded():
    fake = Scripted(["[1]<|object_ref_end|>", "[4]<|object_ref_end|>", "[7]"], "x")
    ans = memory_interleave(fake, TOK, "q?", DOCS, max_rounds=2)
    assert len(ans.rounds) == 2 and len(fake.rows) == 2
    with pytest.raises(ValueError, match="max_rounds"):
        memory_interleave(fake, TOK, "q?", DOCS, max_rounds=0)


def test_unknown_and_repeated_ids_end_retrieval():
    fake = Scripted(["[1][99]<|object_ref_end|>", "[1]<|object_ref_end|>"], "done")
    ans = memory_interleave(fake, TOK, "q?", DOCS, max_rounds=4)
    assert ans.rounds[0].requested_ids == ["1", "99"]
    assert ans.rounds[0].injected_ids == ["1"]
    assert ans.rounds[1].injected_ids == []  # nothing new: stop retrieving
    assert len(fake.rows) == 2
    assert ans.text == "done"


def test_question_row_roles():
    row = question_row(TOK, TPL, "Who?", interleave=False)
    assert routed_text(row) == "Who?"
    assert TOK.decode(row.tokens) == "Who?" + TPL.tail + TPL.response_head
