"""The metrics writer's files: a resume keeps the events written before it; a non-primary
process writes nothing."""

import os

from msa_jax.training.metrics import MetricsWriter, read_jsonl
from tests.training.metrics_util import event_steps


def write(workdir, resume_step, steps, **kw):
    w = MetricsWriter(str(workdir), resume_step, **kw)
    for s in steps:
        w.write(s, {"loss": float(s)})
    w.close()


def test_a_resume_in_the_same_second_keeps_the_earlier_events(tmp_path):
    # both writers open their event file within milliseconds: the same second, so the same
    # tensorboardX file name unless the writer makes them differ (a false pass needs the two
    # opens to straddle a second boundary)
    write(tmp_path, 0, [1, 2])
    write(tmp_path, 2, [3])
    assert event_steps(str(tmp_path / "tensorboard"), "loss") == [1, 2, 3]
    assert [r["step"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"))] == [1, 2, 3]


def test_a_disabled_writer_writes_nothing(tmp_path):
    write(tmp_path / "run", 0, [1, 2], enabled=False)
    assert not os.path.exists(tmp_path / "run")
