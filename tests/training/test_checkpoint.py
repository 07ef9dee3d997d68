"""Checkpoints: keep the last N, refuse another model's checkpoint, export to the Hugging Face
layout that from_pretrained loads (same weights), bad trainer settings named."""

import dataclasses
import os

import jax
import numpy as np
import pytest

import msa_jax
from msa_jax.errors import CheckpointError, ConfigError
from msa_jax.training import optim
from msa_jax.training.checkpoint import Checkpoints
from msa_jax.training.step import data_mesh
from msa_jax.training.trainer import Trainer
from tests.training.batches import keyed_batch
from tests.training.test_step import CFG, M

OCFG = optim.OptimConfig(phases=(optim.Phase(steps=4, lr=1e-3),))


def data(start):
    for i in range(start, 10 ** 9):
        yield keyed_batch(CFG, np.random.default_rng(i), 2, M)


def trainer(workdir, cfg=CFG, **kw):
    return Trainer(cfg, OCFG, data, str(workdir), mesh=data_mesh(1), show_progress=False,
                   tensorboard=False, **kw)


def test_keeps_last_n_exports_and_refuses_another_model(tmp_path):
    t = trainer(tmp_path, checkpoint_every=1, keep=2)
    t.run()
    t.ckpt.wait()
    assert t.ckpt.all_steps() == [3, 4]
    path = t.export(str(tmp_path / "export"))
    t.close()
    loaded = msa_jax.from_pretrained(path)
    assert loaded.cfg.msa.router_layers == CFG.msa.router_layers
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(jax.device_get(t.state.params))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other = CFG.replace(msa=dataclasses.replace(CFG.msa, pooling_size=4))
    with pytest.raises(CheckpointError, match="written for another model config"):
        trainer(tmp_path, cfg=other)


def test_export_of_an_earlier_step(tmp_path):
    t = trainer(tmp_path, checkpoint_every=2)
    t.run(2)
    early = jax.device_get(t.state.params)
    t.run()
    path = t.export(str(tmp_path / "step2"), step=2)
    t.close()
    loaded = msa_jax.from_pretrained(path)
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(early)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_no_checkpoint_to_restore_is_named(tmp_path):
    c = Checkpoints(str(tmp_path))
    with pytest.raises(CheckpointError, match="no checkpoint to restore"):
        c.restore(None)
    c.close()


@pytest.mark.parametrize("kwargs,named", [(dict(checkpoint_every=0), "checkpoint_every"),
                                          (dict(log_every=0), "log_every"),
                                          (dict(keep=0), "train.keep")])
def test_bad_trainer_settings_are_named(tmp_path, kwargs, named):
    with pytest.raises(ConfigError, match=named):
        trainer(tmp_path, **kwargs)


def test_model_without_router_layers_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="router layers"):
        trainer(tmp_path, cfg=msa_jax.preset("tiny"))
    assert not os.path.exists(tmp_path / "checkpoints")
