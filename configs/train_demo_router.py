"""Stage 1 of the bundled demo model's recipe (models/msa-tiny-demo): the router warm-up.

    msa-jax train --config=configs/train_demo_router.py --workdir=runs/demo-router
    msa-jax train --config=configs/train_demo.py --workdir=runs/demo \
        --init_from=runs/demo-router/export

The model and the options of configs/train_demo.py; the data are single-hop retrieval steps
only (the question -> its document's id, no injected text, no answer), so every sample's routing
query is a question: in the joint recipe 4 of 5 samples route with an injected document's own
text, which the router matches early (training recall@1 0.8 at step 500) while held-out
questions stayed at chance among 2,000 documents (docs/training.md). One phase,
0.1 L_LM + L_aux at a constant lr 3e-3; the LM learns the retrieval format meanwhile.
"""

import os

from msa_jax.utils import load_python_file


def get_config():
    c = load_python_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                      "train_demo.py")).get_config()
    d = c.data
    d.hops = (1,)
    d.with_answer = False
    d.num_queries = 8000
    c.optim.warmup.steps = 400  # train_demo.py's warm-up phase (lr 3e-3, 0.1 L_LM + L_aux)
    c.optim.main.steps = 0
    c.eval.every = 100
    return c
