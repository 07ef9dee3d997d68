"""The teacher-forced curriculum after the bundled model's two stages, one stage per argument.

    msa-jax train --config=configs/train_demo_curriculum.py:read1 --workdir=runs/teacher-1hop \
        --init_from=models/msa-tiny-demo
    msa-jax train --config=configs/train_demo_curriculum.py:mix --workdir=runs/teacher-mixed \
        --init_from=runs/teacher-1hop/export
    msa-jax train --config=configs/train_demo_curriculum.py:answer --workdir=runs/teacher-answer \
        --init_from=runs/teacher-mixed/export
    msa-jax train --config=configs/train_demo_curriculum.py:mix2 --workdir=runs/teacher-mix2 \
        --init_from=runs/teacher-answer/export

Every stage has the model and options of configs/train_demo_teacher.py: `optim.read="target"`
(the router layers' LM path reads the documents the step's target names, not the router's
top-k), 4 documents per sample (one hard negative per hop), the routing loss at full weight
against the batch's 64 documents. What differs is which steps a stage trains on
(docs/training.md, "Teacher-forced reading"):
- `read1`: single-hop `[id]` steps only, 900 steps, lr 2e-3 constant: the id copy out of pooled
  chunks starts (on the mix of steps from the bundled model it does not);
- `mix`: every step of single- and two-hop chains, 600 steps, lr 2e-3 cosine: the copy survives
  and improves; the answer step does not start (~40% of the samples are answer steps);
- `answer`: answer steps only (single- and two-hop chains: the question, the rounds and the
  injected texts, then the value), 800 steps, lr 2e-3 constant. Measured from `mix`'s export:
  the LM loss did not leave its plateau in 800 steps, and the routing loss on these steps
  (their routing query is the injected text) cut held-out question recall@10 from 0.73 to 0.17;
- `mix2`: the mix again, 500 steps, lr 1e-3 cosine, meant to bring back the `[id]` steps after
  `answer` (not run: `answer` did not give it anything to keep).
"""

import os

from msa_jax.utils import load_python_file

STAGES = {
    # kinds, hops, questions per chain length, steps, lr, decay
    "read1": (("retrieve",), (1,), 12000, 900, 2e-3, "constant"),
    "mix": (("retrieve", "answer"), (1, 2), 6000, 600, 2e-3, "cosine"),
    "answer": (("answer",), (1, 2), 6000, 800, 2e-3, "constant"),
    "mix2": (("retrieve", "answer"), (1, 2), 6000, 500, 1e-3, "cosine"),
}


def get_config(stage: str = "mix"):
    if stage not in STAGES:
        raise ValueError(f"train_demo_curriculum.py: stage {stage!r} is not one of "
                         f"{sorted(STAGES)} (--config=configs/train_demo_curriculum.py:STAGE)")
    kinds, hops, queries, steps, lr, decay = STAGES[stage]
    here = os.path.dirname(os.path.abspath(__file__))
    base = load_python_file(os.path.join(here, "train_tiny.py"))
    c = load_python_file(os.path.join(here, "train_demo_teacher.py")).get_config()
    d = c.data
    d.kinds, d.hops, d.num_queries = kinds, hops, queries
    if hops == (1,):
        d.length_buckets = (256, 320)
    c.optim.main = base._phase(steps=steps, lr=lr, warmup_steps=20, decay=decay,
                               end_lr=lr if decay == "constant" else 1e-4, lm_weight=1.0,
                               aux_weight=1.0)
    c.eval.every = 400
    return c
