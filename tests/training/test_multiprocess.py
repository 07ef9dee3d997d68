"""Data-parallel training in two processes (jax.distributed on localhost, 1 CPU device each)
against one process with 2 devices: the same global batches, so the same function.

- losses, gradient norms and final parameters agree within float32 reassociation (1e-5);
- the checkpoint both processes wrote through orbax is complete: one process restores it to the
  parameters the workers hold;
- a run stopped half-way (trainer closed) and resumed from its work directory gives the same next
  losses and final parameters as the straight run, bit for bit (the same compiled step on the same
  batches: the companion of tests/training/test_resume.py for two processes);
- one metrics log: only the primary process writes metrics.jsonl.

The workers are tests/training/two_process_train.py; every wait is bounded.
"""

import os

import numpy as np
import pytest

from msa_jax.model.params import init_params
from msa_jax.training import optim
from msa_jax.training import step as st
from msa_jax.training.checkpoint import Checkpoints
from tests.cli.conftest import session_cache_dir
from tests.parallel.test_distributed import (REPO, free_port, read_logs, start_workers,
                                            stop_workers, wait_for)
from tests.training import two_process_train as worker
from tests.training.metrics_util import comparable_records, event_steps

LIMIT_S = 300  # both workers ran both runs (compiles included)
COMPARED = ("loss", "lm_loss", "aux_loss", "grad_norm")
pytestmark = pytest.mark.single_leg


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_process_train")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               XLA_FLAGS="--xla_force_host_platform_device_count=1", MSA_JAX_NO_PROGRESS="1",
               # each worker builds 3 trainers of the same step: compiled once, then cached
               JAX_COMPILATION_CACHE_DIR=session_cache_dir(tmp_path_factory),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    port = free_port()
    procs, logs = start_workers("tests.training.two_process_train", out, port, env)
    try:
        if not wait_for([out / f"done_{i}" for i in range(2)], procs, LIMIT_S):
            pytest.fail("the two training workers did not both finish:\n" + read_logs(logs))
        yield out
    finally:
        stop_workers(procs, logs)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The same trainer in this process, on a 2-device mesh of fake CPU devices."""
    workdir = str(tmp_path_factory.mktemp("one_process_train"))
    trainer = worker.make_trainer(workdir)
    trainer.run()
    trainer.close()
    return workdir, worker.local_params(trainer.state)


def losses(workdir) -> np.ndarray:
    records = comparable_records(workdir)
    assert [r["step"] for r in records] == list(range(1, worker.STEPS + 1)), records
    return np.asarray([[r[k] for k in COMPARED] for r in records])


def params_of(path) -> dict:
    with np.load(path) as f:
        return dict(f)


def assert_close_params(got: dict, want: dict, where: str):
    assert sorted(got) == sorted(want), where
    for name in want:  # float32 after 4 Adam steps: updates ~ lr, reductions reordered
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5,
                                   err_msg=f"{where}: {name}")


def test_two_processes_train_like_one(two_processes, one_process):
    workdir, want_params = one_process
    # float32, the global means reduced across processes instead of devices: 1e-5 relative
    np.testing.assert_allclose(losses(two_processes / "straight"), losses(workdir), rtol=1e-5)
    for i in range(2):
        assert_close_params(params_of(two_processes / f"straight_params_{i}.npz"), want_params,
                            f"process {i}")


def test_only_the_primary_process_writes_metrics(two_processes):
    flags = [(two_processes / f"writes_metrics_{i}").read_text() for i in range(2)]
    assert flags == ["True", "False"], flags
    # losses() checks metrics.jsonl (one record per step); the event files: a second writer
    # would duplicate them, or interleave records in a file of the same name
    for run in ("straight", "stopped"):
        steps = event_steps(str(two_processes / run / "tensorboard"), "loss")
        assert steps == list(range(1, worker.STEPS + 1)), (run, steps)


def test_checkpoint_written_by_two_processes_restores_in_one(two_processes):
    ckpt = Checkpoints(str(two_processes / "straight"))
    assert ckpt.all_steps() == list(range(worker.EVERY, worker.STEPS + 1, worker.EVERY))
    mesh = st.data_mesh(2)
    tx = optim.make_optimizer(worker.OCFG)
    target = st.place_state(worker.CFG, mesh, st.init_state(init_params(worker.CFG, 0), tx))
    state, meta = ckpt.restore(target)
    ckpt.close()
    assert int(state.step) == worker.STEPS and meta["data_position"] == worker.STEPS
    restored = worker.local_params(state)
    held = params_of(two_processes / "straight_params_0.npz")
    for name in held:  # a restore copies the written arrays: bit for bit
        assert np.array_equal(restored[name], held[name]), name


def test_resume_after_a_stop_gives_the_same_next_losses(two_processes):
    straight, stopped = two_processes / "straight", two_processes / "stopped"
    # the same compiled step on the same batches, from the same restored state: bit for bit
    assert comparable_records(stopped) == comparable_records(straight)
    for i in range(2):
        got = params_of(two_processes / f"stopped_params_{i}.npz")
        want = params_of(two_processes / f"straight_params_{i}.npz")
        for name in want:
            assert np.array_equal(got[name], want[name]), f"process {i}: {name}"
