"""The gradient of the whole training loss (msa_jax/training/step.py `loss_and_metrics`) against
central finite differences in float64 (issue 10): a tiny MSA model whose parameters and compute
are float64 (x64 enabled for this module), along random directions in several parameter subsets,
including the LM loss's path into the document encodings through the pooled K/V, and no gradient
into the router projections from the LM loss.

Tolerances (float64): eps = 1e-6 along a unit direction. The central difference's truncation
error is O(eps^2) ~ 1e-12 and its rounding error ~ ulp(loss) / eps ~ 1e-16 * 10 / 1e-6 = 1e-9,
so |fd - analytic| <= 1e-9 + 1e-6 * |analytic| (atol 1e-9, rtol 1e-6). A float32 computation
anywhere on the path (rounding ~1e-7 of the loss) puts ~0.1 of error into such a difference.
The hard top-k is piecewise constant: every stencil asserts the selected documents do not change.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msa_jax.model.params import init_params
from msa_jax.model.train_forward import train_forward
from msa_jax.training import step as st
from tests.training.test_step import CFG, M, batch_of, grad_of, loss_of

CFG64 = CFG.replace(dtype="float64", param_dtype="float64")
EPS, RTOL, ATOL = 1e-6, 1e-6, 1e-9
TOTAL, LM_ONLY, AUX_ONLY = (1.0, 0.1), (1.0, 0.0), (0.0, 1.0)  # (lm_w, aux_w)
ROUTER_LAYER = CFG.msa.router_layers[0]


@functools.partial(jax.jit, static_argnames=("cfg",))
def selected(cfg, params, batch):
    return train_forward(cfg, params, batch, M).selected


@pytest.fixture(scope="module")
def x64():
    # jax.enable_x64: a context manager on JAX 0.10.2 and 0.12 (jax.experimental.enable_x64 is
    # gone); x64 is part of jit's cache key, so the float32 tests' compilations are unaffected
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def model(x64):
    """(params, batch, {weights: gradient}) of the float64 model."""
    params = init_params(CFG64, 1)
    batch = batch_of(CFG64)
    grads = {w: grad_of(CFG64, params, batch, *w) for w in (TOTAL, LM_ONLY, AUX_ONLY)}
    return params, batch, grads


def _doc_only_rows(batch) -> np.ndarray:
    """Tokens that occur only inside documents: with an untied head their embedding rows reach
    the LM loss only through the selected documents' pooled K/V (routing has no gradient)."""
    tokens, roles, mask = (np.asarray(x) for x in (batch.tokens, batch.roles, batch.mask))
    docs = set(tokens[(roles > 0) & (mask > 0)].tolist())
    active = set(tokens[(roles <= 0) & (mask > 0)].tolist())
    return np.asarray(sorted(docs - active))


def _is_router_proj(names):
    return any(n.startswith("router_") for n in names)


def _doc_rows_mask(names, x, batch):
    if names != ("embed_tokens", "embedding"):
        return False
    rows = np.zeros(x.shape, bool)
    rows[_doc_only_rows(batch)] = True
    return rows


# subset -> (loss weights, mask(names, leaf, batch): bool or a bool array of the leaf's shape)
SUBSETS = {
    "everything": (TOTAL, lambda names, x, b: True),
    "layer 0 MLP": (TOTAL, lambda names, x, b: names[0] == "layers_0" and "mlp" in names),
    "final norm": (TOTAL, lambda names, x, b: names[0] == "norm"),
    "router projections, routing loss": (AUX_ONLY, lambda names, x, b: _is_router_proj(names)),
    "router-layer k_proj/v_proj, LM loss": (
        LM_ONLY, lambda names, x, b: names[:3] in ((f"layers_{ROUTER_LAYER}", "self_attn", p)
                                                   for p in ("k_proj", "v_proj"))),
    "document-only embedding rows, LM loss": (LM_ONLY, _doc_rows_mask),
}


def _masked(tree, batch, mask, fill=None):
    """numpy copy of `tree` (or of `fill(shape)` per leaf) zeroed outside the mask."""
    def leaf(path, x):
        m = np.broadcast_to(mask(st._path_names(path), x, batch), x.shape)
        return (np.asarray(x) if fill is None else fill(x.shape)) * m
    return jax.tree_util.tree_map_with_path(leaf, tree)


def _norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(tree))))


def _random_direction(params, batch, mask, rng):
    """A unit-norm random direction supported on the masked entries."""
    d = _masked(params, batch, mask, rng.standard_normal)
    norm = _norm(d)
    assert norm > 0
    return jax.tree.map(lambda x: jnp.asarray(x / norm, jnp.float64), d)


def _dot(a, b) -> float:
    return sum(float(jnp.vdot(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _central_difference(params, batch, direction, weights):
    """(f(p + eps d) - f(p - eps d)) / 2 eps, and the two values; top-k unchanged in the stencil."""
    base = selected(CFG64, params, batch)
    values = []
    for sign in (1.0, -1.0):
        p = jax.tree.map(lambda x, d: x + sign * EPS * d, params, direction)
        for a, b in zip(selected(CFG64, p, batch), base):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), "top-k flipped")
        values.append(float(loss_of(CFG64, p, batch, *weights)))
    return (values[0] - values[1]) / (2 * EPS), values


def test_the_model_computes_in_float64(model):
    params, batch, grads = model
    assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(params))
    assert loss_of(CFG64, params, batch).dtype == jnp.float64
    assert all(x.dtype == jnp.float64 for g in grads.values() for x in jax.tree.leaves(g))


@pytest.mark.parametrize("subset", list(SUBSETS))
def test_gradient_matches_central_differences(model, subset):
    """g . d against the central difference along 2 random unit directions d in the subset; the
    subset's gradient is non-zero (else the comparison would hold trivially)."""
    params, batch, grads = model
    weights, mask = SUBSETS[subset]
    g = grads[weights]
    assert _norm(_masked(g, batch, mask)) > 0, f"{subset}: no gradient"
    rng = np.random.default_rng(list(SUBSETS).index(subset))
    for _ in range(2):
        d = _random_direction(params, batch, mask, rng)
        fd, _ = _central_difference(params, batch, d, weights)
        analytic = _dot(g, d)
        assert abs(fd - analytic) <= ATOL + RTOL * abs(analytic), (subset, fd, analytic)


def test_lm_loss_gives_router_projections_exactly_zero_gradient(model):
    """The LM loss sees the router only through the hard top-k: its gradient into
    router_q_proj/router_k_proj is exactly zero, and so is the central difference (while the
    selection holds, the LM loss's computation does not read the router's outputs: bit-identical
    values). The routing loss gives them a non-zero gradient (checked against central differences
    in test_gradient_matches_central_differences)."""
    params, batch, grads = model
    names = ("router_q_proj", "router_k_proj")
    for layer in CFG64.msa.router_layers:
        for name in names:
            lm = np.asarray(grads[LM_ONLY][f"layers_{layer}"]["self_attn"][name]["kernel"])
            aux = np.asarray(grads[AUX_ONLY][f"layers_{layer}"]["self_attn"][name]["kernel"])
            assert np.all(lm == 0), f"layer {layer} {name}: the LM loss reaches the router"
            assert np.abs(aux).max() > 0, f"layer {layer} {name}: no routing-loss gradient"
    d = _random_direction(params, batch, lambda n, x, b: _is_router_proj(n),
                          np.random.default_rng(1))
    _, (plus, minus) = _central_difference(params, batch, d, LM_ONLY)
    assert plus == minus
