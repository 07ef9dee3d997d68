"""The training loss and step: golden losses, remat, bf16 compute over float32 master weights,
CUDA lowering. The gradient against central finite differences and the router's gradient paths
are checked in float64: tests/training/test_grad_float64.py (which reuses CFG and the helpers)."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels_pallas import common
from msa_jax.config import preset
from msa_jax.model.params import abstract_params, init_params
from msa_jax.model.train_forward import TrainBatch
from msa_jax.training import optim
from msa_jax.training import step as st
from tests.conftest import golden_dirs
from tests.golden.harness import Fixture
from tests.training.batches import keyed_batch

M = 3
# 2 layers (router layer 1: counted by the routing loss, >= num_layers // 2) to keep compiles
# short; untied head: an embedding row of a document-only token then reaches the loss only
# through the document encodings; top-k 2 of 3 documents exercises the hard selection
_TINY = preset("tiny-msa")
CFG = _TINY.replace(num_layers=2, tie_word_embeddings=False, kernel_implementation="xla",
                    msa=dataclasses.replace(_TINY.msa, router_layers=(1,), top_k_docs=2))


def batch_of(cfg, seed=0, b=2):
    x = keyed_batch(cfg, np.random.default_rng(seed), b, M)
    return TrainBatch(*(jnp.asarray(x[k]) for k in st.BATCH_FIELDS))


@functools.partial(jax.jit, static_argnames=("cfg",))
def loss_of(cfg, params, batch, lm_w=1.0, aux_w=0.1):
    return st.loss_and_metrics(cfg, params, batch, M, lm_w, aux_w)[0]


@functools.partial(jax.jit, static_argnames=("cfg",))
def grad_of(cfg, params, batch, lm_w=1.0, aux_w=0.1):
    return jax.grad(lambda p: st.loss_and_metrics(cfg, p, batch, M, lm_w, aux_w)[0])(params)


@pytest.mark.parametrize("path", golden_dirs(), ids=lambda p: p.rsplit("/", 1)[-1])
def test_loss_reproduces_the_golden_training_losses(path):
    fx = Fixture(path)
    cfg, params = fx.train_model()
    batch, m = fx.train_batch()
    msa = cfg.msa
    fn = jax.jit(st.loss_and_metrics, static_argnums=(0, 3, 4, 5))
    loss, metrics = fn(cfg, params, batch, m, msa.lm_loss_weight, msa.aux_loss_weight)
    tol = fx.manifest["tolerances"]["losses"]
    for name, got in (("loss", loss), ("lm_loss", metrics["lm_loss"]),
                      ("aux_loss", metrics["aux_loss"])):
        want = float(fx.want(f"train/{name}"))
        assert abs(float(got) - want) <= tol["atol"] + tol["rtol"] * abs(want), name


def test_remat_computes_the_same_loss_and_gradient():
    params = init_params(CFG, 1)
    batch = batch_of(CFG)
    remat = CFG.replace(remat=True)
    # the same ops recomputed: equal up to float32 reassociation (rtol 1e-5)
    np.testing.assert_allclose(float(loss_of(remat, params, batch)),
                               float(loss_of(CFG, params, batch)), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grad_of(remat, params, batch)),
                    jax.tree.leaves(grad_of(CFG, params, batch))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)


def test_bfloat16_compute_keeps_float32_master_weights():
    cfg32 = CFG
    cfg16 = CFG.replace(dtype="bfloat16", param_dtype="float32")
    ocfg = optim.OptimConfig(phases=(optim.Phase(steps=5, lr=1e-3),))
    tx = optim.make_optimizer(ocfg)
    params = init_params(cfg16, 1)
    batch = batch_of(cfg16)
    step = jax.jit(st.make_step(cfg16, ocfg, tx, M))
    state, metrics = step(st.init_state(params, tx), batch)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.opt_state)
               if jnp.issubdtype(x.dtype, jnp.floating))
    # bfloat16 activations (8-bit mantissa) over 2 layers: the loss within 2% of float32's
    np.testing.assert_allclose(float(metrics["loss"]), float(loss_of(cfg32, params, batch)),
                               rtol=2e-2)


def test_pallas_train_step_lowers_for_cuda():
    """Forward and backward of the whole step through the Pallas attention kernels (Triton),
    at MSA-4B head sizes in bfloat16; the in-sample routing scores stay on XLA (they are
    differentiated by the routing loss)."""
    cfg = preset("tiny-msa", kernel_implementation="pallas", dtype="bfloat16",
                 param_dtype="float32", num_heads=32, num_kv_heads=8, head_dim=128,
                 hidden_size=256)
    ocfg = optim.OptimConfig()
    tx = optim.make_optimizer(ocfg)
    state = jax.eval_shape(lambda p: st.init_state(p, tx), abstract_params(cfg))
    b, length, m = 2, 64, 4
    ints = jax.ShapeDtypeStruct((b, length), jnp.int32)
    batch = TrainBatch(ints, ints, ints, ints, ints, jax.ShapeDtypeStruct((b, m), jnp.int32))
    leaves, tree = jax.tree.flatten((state, batch))
    step = st.make_step(cfg, ocfg, tx, m)

    def flat(*xs):
        return jax.tree.leaves(step(*jax.tree.unflatten(tree, xs)))

    text = common.lower_for_cuda(flat, *leaves)
    names = set(re.findall(r'name = "(\w+)", num_stages', text))
    assert {"msa_attention_fwd", "msa_attention_dq", "msa_attention_dkv"} <= names, names
