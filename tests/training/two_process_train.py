"""One process of the two-process data-parallel training run (driven by test_multiprocess.py).

    python -m tests.training.two_process_train PROCESS_ID PORT OUT_DIR

Joins a 2-process jax.distributed run on localhost (1 CPU device per process: the test sets
XLA_FLAGS), so the 2-device `data` mesh spans both processes and each hands the step its own 2
rows of the global batch of 4 (`shard_batch`). Two runs, every step under the dead-peer guard:
- straight: STEPS steps in OUT_DIR/straight (checkpoints every EVERY steps);
- stopped: STEPS // 2 steps in OUT_DIR/stopped, the trainer closed (its checkpoint written by
  both processes through orbax), then a new Trainer on the same work directory restores it and
  runs the remaining steps.
Each process writes its replica of the final params of each run to OUT_DIR/{run}_params_{id}.npz,
whether its trainer writes the metrics logs to OUT_DIR/writes_metrics_{id}, then OUT_DIR/done_{id}. The single-process reference (the test) builds the same trainer with
`make_trainer` and the same rows with `data_fn`.
"""

import os
import sys

import jax
import numpy as np

from msa_jax.training import optim
from msa_jax.training.step import data_mesh
from msa_jax.training.trainer import Trainer
from tests.training.batches import keyed_batch
from tests.training.test_step import CFG, M

STEPS, EVERY, BATCH = 4, 2, 4
OCFG = optim.OptimConfig(phases=(optim.Phase(steps=1, lr=3e-3, lm_weight=0.1, aux_weight=1.0,
                                             decay="constant"),
                                 optim.Phase(steps=STEPS - 1, lr=2e-3, warmup_steps=1)))
STEP_TIMEOUT_S = 240  # a run that takes longer means a peer is gone (compiles included)
FIELDS = ("tokens", "positions", "roles", "mask", "labels", "doc_labels")


def data_fn(process_index: int = 0, process_count: int = 1):
    """Batches from step `start` on: this process's rows of the global batch of the step."""
    local = BATCH // process_count
    rows = slice(process_index * local, (process_index + 1) * local)

    def data(start: int):
        for i in range(start, 10 ** 9):
            batch = keyed_batch(CFG, np.random.default_rng([11, i]), BATCH, M)
            yield {k: (v[rows] if k in FIELDS else v) for k, v in batch.items()}
    return data


def make_trainer(workdir: str, process_index: int = 0, process_count: int = 1) -> Trainer:
    return Trainer(CFG, OCFG, data_fn(process_index, process_count), workdir, mesh=data_mesh(2),
                   seed=3, checkpoint_every=EVERY, show_progress=False, tensorboard=True)


def local_params(state) -> dict[str, np.ndarray]:
    """This process's replica of every parameter (replicated: one addressable shard each)."""
    flat = jax.tree_util.tree_flatten_with_path(state.params)[0]
    return {jax.tree_util.keystr(p): np.asarray(x.addressable_shards[0].data) for p, x in flat}


def main(process_id: int, port: int, out: str):
    from msa_jax.memory import distributed

    distributed.initialize(f"127.0.0.1:{port}", 2, process_id, timeout_s=60,
                           heartbeat_timeout_s=10)
    assert jax.device_count() == 2 and jax.local_device_count() == 1, jax.devices()
    try:
        with distributed.guard("two-process training", STEP_TIMEOUT_S):
            trainer = make_trainer(os.path.join(out, "straight"), process_id, 2)
            trainer.run()
            trainer.close()
            with open(os.path.join(out, f"writes_metrics_{process_id}"), "w") as f:
                f.write(str(trainer.writer.enabled))
            np.savez(os.path.join(out, f"straight_params_{process_id}.npz"),
                     **local_params(trainer.state))
            stopped = os.path.join(out, "stopped")
            trainer = make_trainer(stopped, process_id, 2)
            trainer.run(STEPS // 2)
            trainer.close()
            trainer = make_trainer(stopped, process_id, 2)
            print("resumed_from", trainer.resumed_from, flush=True)
            assert trainer.resumed_from == STEPS // 2, trainer.resumed_from
            trainer.run()
            trainer.close()
            np.savez(os.path.join(out, f"stopped_params_{process_id}.npz"),
                     **local_params(trainer.state))
    except distributed.PeerLostError as e:
        distributed.exit_peer_lost(e)
    open(os.path.join(out, f"done_{process_id}"), "w").close()


if __name__ == "__main__":
    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
    jax.config.update("jax_disable_most_optimizations", True)
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
