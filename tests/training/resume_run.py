"""Subprocess body of the exact-resume tests: train a tiny model in WORKDIR for STEPS steps
(resuming if WORKDIR has a checkpoint). With KILL_AT, the process SIGKILLs itself when the data
pipeline is asked for batch KILL_AT, once checkpoint KILL_AT - KILL_AT % EVERY is on disk (so
the resumed run has something to resume from): no Python exception, no cleanup.

    python tests/training/resume_run.py WORKDIR STEPS [KILL_AT]
"""

import os
import signal
import sys
import time

import numpy as np

from msa_jax.training import optim
from msa_jax.training.step import data_mesh
from msa_jax.training.trainer import Trainer
from tests.training.batches import keyed_batch
from tests.training.test_step import CFG

EVERY = 2
NUM_DOCS = 3


def data_fn(workdir: str, kill_at: int | None):
    def data(start: int):
        for i in range(start, 10 ** 9):
            if i == kill_at:
                done = os.path.join(workdir, "checkpoints", str(i - i % EVERY))
                deadline = time.time() + 120
                while not os.path.isdir(done) and time.time() < deadline:
                    time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGKILL)
            yield keyed_batch(CFG, np.random.default_rng([7, i]), 4, NUM_DOCS)
    return data


def main(workdir: str, steps: int, kill_at: int | None):
    ocfg = optim.OptimConfig(phases=(optim.Phase(steps=2, lr=3e-3, lm_weight=0.1, aux_weight=1,
                                                 decay="constant"),
                                     optim.Phase(steps=steps - 2, lr=2e-3, warmup_steps=1)))
    trainer = Trainer(CFG, ocfg, data_fn(workdir, kill_at), workdir, mesh=data_mesh(2),
                      checkpoint_every=EVERY, show_progress=False, tensorboard=True)
    print("resumed_from", trainer.resumed_from, flush=True)
    trainer.run()
    trainer.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
