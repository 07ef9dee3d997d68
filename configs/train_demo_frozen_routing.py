"""The reader trained over a frozen routing path, from the bundled model, one stage per argument.

    msa-jax train --config=configs/train_demo_frozen_routing.py:answer \
        --workdir=runs/frozen-answer --init_from=models/msa-tiny-demo
    msa-jax train --config=configs/train_demo_frozen_routing.py:mix \
        --workdir=runs/frozen-mix --init_from=runs/frozen-answer/export

Every stage before this one that trained the reader moved the router's inputs and lost routing
quality (docs/training.md: stage 4, the answer stage of configs/train_demo_curriculum.py). Here
`optim.freeze="routing"` keeps fixed everything the first router layer's routing scores are
computed from (the token embedding, layers 0-1, layer 2's input norm, the router projections),
and `model.shared_selection=True` makes both router layers read that layer's choice, so the
documents a question selects are exactly the bundled model's; layers 2-3 (less their router
projections), the final norm and the LM head learn to read. With the router fixed, no routing
loss (`aux_weight=0`) and two documents per sample, no hard negatives (the routing loss, the
only user of negatives, is off). The reader reads the step's right documents
(`optim.read="target"`); at inference it reads the router's top-1 (`top_k_docs=1`).
- `answer1`: answer steps whose documents state one fact each (`data.facts_per_doc=(1, 1)`: the
  answer is the only value word in the injected text), 300 steps, lr 2e-3: the copy without
  the key match;
- `answer`: answer steps only (single- and two-hop chains: the question, the rounds and the
  injected texts, then `<End-of-Retrieve>` and the value), 900 steps, lr 2e-3 constant;
- `mix`: every step of the chains (the `[id]` steps too: when to stop retrieving), lr 1e-3
  cosine to 1e-4, so that the model writes `[id]` again after `answer`.
Measured (docs/training.md, "The answer step over a frozen routing path"): from the bundled
model neither `answer` (900 steps, 921 s; teacher-forced answer step 0.000) nor `answer1` (300
steps) left the LM loss plateau; from random weights with nothing frozen
(`--config.optim.freeze=`, no --init_from), `answer1` left it after ~130 steps (the N(0, 1)
embedding) or ~230 (`--config.model.embedding_init_std=0.02`; then `answer`, 600 steps, reached
0.375 teacher-forced). The bundled model's trained state blocks the copy. `mix` was not run.
"""

import os

from msa_jax.utils import load_python_file

STAGES = {
    # kinds, facts per document, steps, lr, decay
    "answer1": (("answer",), (1, 1), 300, 2e-3, "constant"),
    "answer": (("answer",), (2, 5), 900, 2e-3, "constant"),
    "mix": (("retrieve", "answer"), (2, 5), 400, 1e-3, "cosine"),
}


def get_config(stage: str = "answer"):
    if stage not in STAGES:
        raise ValueError(f"train_demo_frozen_routing.py: stage {stage!r} is not one of "
                         f"{sorted(STAGES)} (--config=configs/train_demo_frozen_routing.py:STAGE)")
    kinds, facts, steps, lr, decay = STAGES[stage]
    here = os.path.dirname(os.path.abspath(__file__))
    base = load_python_file(os.path.join(here, "train_tiny.py"))
    c = load_python_file(os.path.join(here, "train_demo.py")).get_config()
    c.model.shared_selection = True
    c.model.top_k_docs = 1
    c.optim.freeze = "routing"
    c.optim.read = "target"
    c.optim.batch_negatives = 0
    d = c.data
    d.kinds = kinds
    d.facts_per_doc = facts
    d.docs_per_sample = 2
    d.hard_negatives = 0
    d.num_queries = 6000  # per chain length
    d.length_buckets = (256, 320, 384, 448)
    d.doc_buckets = (2,)
    c.optim.main = base._phase(steps=steps, lr=lr, warmup_steps=20, decay=decay,
                               end_lr=lr if decay == "constant" else 1e-4, lm_weight=1.0,
                               aux_weight=0.0)
    c.eval.every = 0  # the routing path does not move
    c.train.checkpoint_every = 100
    return c
