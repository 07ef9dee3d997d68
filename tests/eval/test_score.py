"""The scorer on hand-made answers: document-id and answer exact match, router recall."""

from msa_jax.eval.evalset import EvalItem
from msa_jax.eval.score import normalize, score_answer, summarize
from msa_jax.inference.interleave import Answer, Round
from msa_jax.inference.memory_generate import LayerChoice

ONE = EvalItem("1hop-0", 1, "What is the red boat of Lena K. Sato?", "amber", ("4",))
TWO = EvalItem("2hop-0", 2, "What is the red boat of the mentor of Bea T. Xu?", "Oslo",
               ("7", "2"))


def _round(text, ids, routed):  # routed: per router layer, ids best first
    return Round(text, ids, ids, [LayerChoice(layer, docs, [1.0] * len(docs))
                                  for layer, docs in routed.items()])


def test_scores_by_hand():
    assert normalize("  The Amber. ") == "amber" and normalize("an Oslo!") == "oslo"
    one = Answer("The amber.", [_round("[4]<|object_ref_end|>", ["4"], {2: ["9", "4"], 3: ["4"]}),
                                _round("<End-of-Retrieve>", [], {2: ["4"], 3: ["4"]})])
    s = score_answer(ONE, one)
    assert s == {"doc_id_match": 1.0, "answer_match": 1.0, "recall@1/layer2": 0.0,
                 "recall@1/layer3": 1.0, "recall@2/layer2": 1.0, "recall@2/layer3": 1.0}
    # two-hop: names 7 then 9 (wrong), answers wrong; routing finds 7 in round 1 at layer 2 only
    two = Answer("Lima", [_round("[7]<|object_ref_end|>", ["7"], {2: ["7", "1"], 3: ["1", "7"]}),
                          _round("[9]<|object_ref_end|>", ["9"], {2: ["9", "3"], 3: ["2", "9"]})])
    t = score_answer(TWO, two)
    assert t == {"doc_id_match": 0.0, "answer_match": 0.0, "recall@1/layer2": 0.5,
                 "recall@1/layer3": 0.5, "recall@2/layer2": 0.5, "recall@2/layer3": 1.0}
    # an extra id is not an exact match; a single-pass answer is scored on its one routing
    extra = Answer("amber", [_round("[4][5]", ["4", "5"], {2: ["4"]})])
    assert score_answer(ONE, extra)["doc_id_match"] == 0.0
    single = Answer("Oslo", [], [LayerChoice(2, ["2", "7"], [2.0, 1.0])])
    assert score_answer(TWO, single, ks=(1,)) == {"doc_id_match": 0.0, "answer_match": 1.0,
                                                  "recall@1/layer2": 0.5}
    table = summarize([ONE, TWO], [s, t])
    assert table["all"]["answer_match"] == 0.5 and table["all"]["count"] == 2
    assert table["hops=1"]["doc_id_match"] == 1.0 and table["hops=2"]["recall@2/layer3"] == 1.0
