"""The training loss and step: golden losses, gradients against central finite differences,
the router's gradient paths, remat, bf16 compute over float32 master weights, CUDA lowering."""

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
from msa_jax.model.train_forward import TrainBatch, train_forward
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


@functools.partial(jax.jit, static_argnames=("cfg",))
def selected(cfg, params, batch):
    return train_forward(cfg, params, batch, M).selected


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


def _directional_fd(cfg, params, batch, direction, eps, **weights):
    plus = jax.tree.map(lambda p, d: p + eps * d, params, direction)
    minus = jax.tree.map(lambda p, d: p - eps * d, params, direction)
    for p in (plus, minus):  # the hard top-k must not flip inside the stencil
        for a, b in zip(selected(cfg, p, batch), selected(cfg, params, batch)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    f = lambda p: float(loss_of(cfg, p, batch, **weights))  # noqa: E731
    return (f(plus) - f(minus)) / (2 * eps)


def _unit(tree, keep):
    """The tree restricted to the leaves `keep(path)` selects, scaled to unit norm."""
    picked = jax.tree_util.tree_map_with_path(
        lambda path, x: x if keep(st._path_names(path)) else jnp.zeros_like(x), tree)
    norm = float(st.global_norm(picked))
    assert norm > 0
    return jax.tree.map(lambda x: x / norm, picked)


SUBSETS = {
    "everything": lambda names: True,
    "router projections": lambda names: any(n.startswith("router_") for n in names),
    "layer 0 MLP": lambda names: names[0] == "layers_0" and "mlp" in names,
    "final norm": lambda names: names[0] == "norm",
}


@pytest.mark.parametrize("subset", list(SUBSETS))
def test_gradient_matches_central_differences(subset):
    """Directional derivative along the gradient restricted to a subset, against central
    differences of the loss. float32: the model keeps its statistics, RoPE, pooling and
    attention accumulators in float32 explicitly, so a float64 run would still compute in
    float32; eps = 1e-3 along a unit direction puts the rounding error of the loss (~1e-6)
    near 1e-3 of a derivative of order 1: rtol 1e-2."""
    params = init_params(CFG, 1)
    batch = batch_of(CFG)
    g = grad_of(CFG, params, batch)
    u = _unit(g, SUBSETS[subset])
    analytic = sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(u)))
    fd = _directional_fd(CFG, params, batch, u, 1e-3)
    assert fd == pytest.approx(analytic, rel=1e-2), (fd, analytic)


def _doc_only_rows(batch):
    tokens, roles, mask = (np.asarray(x) for x in (batch.tokens, batch.roles, batch.mask))
    docs = set(tokens[(roles > 0) & (mask > 0)].tolist())
    active = set(tokens[(roles <= 0) & (mask > 0)].tolist())
    return np.asarray(sorted(docs - active))


def test_lm_loss_reaches_document_encodings_through_pooled_kv():
    """Embedding rows of tokens that occur only inside documents: the LM loss (aux weight 0)
    reaches them only through the selected documents' pooled K/V. Non-zero, and equal to
    central differences."""
    params = init_params(CFG, 1)
    batch = batch_of(CFG)
    rows = _doc_only_rows(batch)
    g = grad_of(CFG, params, batch, lm_w=1.0, aux_w=0.0)
    emb = np.asarray(g["embed_tokens"]["embedding"])
    assert np.abs(emb[rows]).max() > 0
    direction = jax.tree.map(jnp.zeros_like, params)
    d = np.zeros_like(emb)
    d[rows] = emb[rows] / np.linalg.norm(emb[rows])
    direction["embed_tokens"]["embedding"] = jnp.asarray(d)
    fd = _directional_fd(CFG, params, batch, direction, 1e-3, lm_w=1.0, aux_w=0.0)
    assert fd == pytest.approx(float(np.linalg.norm(emb[rows])), rel=1e-2)


def test_lm_loss_gives_router_projections_no_gradient():
    params = init_params(CFG, 1)
    batch = batch_of(CFG)
    lm_only = grad_of(CFG, params, batch, lm_w=1.0, aux_w=0.0)
    aux_only = grad_of(CFG, params, batch, lm_w=0.0, aux_w=1.0)
    for layer in CFG.msa.router_layers:
        for name in ("router_q_proj", "router_k_proj"):
            lm = np.asarray(lm_only[f"layers_{layer}"]["self_attn"][name]["kernel"])
            aux = np.asarray(aux_only[f"layers_{layer}"]["self_attn"][name]["kernel"])
            assert np.all(lm == 0), f"layer {layer} {name}: LM loss reaches the router"
            assert np.abs(aux).max() > 0, f"layer {layer} {name}: no routing-loss gradient"


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
