"""Both skills from random weights in one run: routing questions and copying answers.

    msa-jax train --config=configs/train_demo_both.py:easy --workdir=runs/both-easy

At this scale each skill has started only from random weights: the router did not train over a
model trained to read, and the reader did not learn to copy over the trained router
(docs/training.md, "The answer step over a frozen routing path"). So this recipe trains both at
once from random weights, with the model and options of configs/train_demo.py (8 documents per
sample, one hard negative, in-batch negatives, the N(0, 1) embedding): single-hop `[id]` steps,
whose routing query is the question, with the routing loss; and the answer steps *without*
routing labels (`data.answer_routing=False`: their routing query holds the injected text, which
matches its own document and taught the router the wrong match in the one joint stage from random
weights of 2026-12-01). `L_LM + L_aux`, lr 3e-3 constant.
- `easy`: one fact per document (`data.facts_per_doc=(1, 1)`: the answer is the only value word
  in the injected text), 300 steps;
- `full`: 2-5 facts per document, 600 steps, lr 2e-3 cosine to 1e-4 (from `easy`'s export).
Measured (docs/training.md): `easy` trains the router at once (routing loss 4.82 -> 0.84 in 300
steps, held-out recall@10 0.42 among 2,064 documents) but the copy does not start in 600 steps
(teacher-forced answer step 0.031). Started instead from a model that learned the copy alone
(`configs/train_demo_frozen_routing.py:answer1 --config.optim.freeze=`, from random weights),
600 steps of `easy` keep the copy (answer step 0.969 teacher-forced, one-fact documents) while
the router starts late (held-out recall@10 0.31 at step 600). `full` was not run.
"""

import os

from msa_jax.utils import load_python_file

STAGES = {
    # facts per document, steps, lr, decay
    "easy": ((1, 1), 300, 3e-3, "constant"),
    "full": ((2, 5), 600, 2e-3, "cosine"),
}


def get_config(stage: str = "easy"):
    if stage not in STAGES:
        raise ValueError(f"train_demo_both.py: stage {stage!r} is not one of "
                         f"{sorted(STAGES)} (--config=configs/train_demo_both.py:STAGE)")
    facts, steps, lr, decay = STAGES[stage]
    here = os.path.dirname(os.path.abspath(__file__))
    base = load_python_file(os.path.join(here, "train_tiny.py"))
    c = load_python_file(os.path.join(here, "train_demo.py")).get_config()
    d = c.data
    d.hops = (1,)
    d.kinds = ("retrieve", "answer")
    d.answer_routing = False
    d.facts_per_doc = facts
    d.num_queries = 8000
    d.length_buckets = (320, 448, 576, 704)
    c.optim.warmup.steps = 0
    c.optim.main = base._phase(steps=steps, lr=lr, warmup_steps=20, decay=decay,
                               end_lr=lr if decay == "constant" else 1e-4, lm_weight=1.0,
                               aux_weight=1.0)
    c.eval.every = 100
    return c
