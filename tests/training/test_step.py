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
from msa_jax.config import ConfigError, preset
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


def _forward(cfg, params, batch, batch_rows=None, max_segment=None, max_active=None,
             read_target=False):
    from msa_jax.model.train_forward import train_forward
    return jax.jit(train_forward, static_argnums=(0, 3, 4, 5, 6, 7))(
        cfg, params, batch, M, batch_rows, max_segment, max_active, read_target)


@pytest.mark.parametrize("banded", [False, True], ids=["whole-rows", "banded"])
def test_read_target_attends_to_the_marked_documents_only(banded):
    """read_target: the active tokens read the documents marked READ_LABEL, whatever the
    router selects; the scores and the selection (what the routing loss and the recall see)
    are those of the routed forward. Whole rows and banded attention (the demo recipes')."""
    from msa_jax.model.train_forward import READ_LABEL

    params = init_params(CFG, 0)
    batch = batch_of(CFG, seed=5, b=3)
    fields = {k: np.asarray(getattr(batch, k)).copy() for k in st.BATCH_FIELDS}
    band = {}
    if banded:
        head = len(CFG.msa.prefix_token_ids)
        n_active = ((fields["roles"] <= 0) & (fields["mask"] > 0)).sum(1).max()
        band = dict(max_segment=int(max((fields["roles"][b] == d).sum() for b in range(3)
                                        for d in range(1, M + 1))),
                    max_active=int(n_active) - head)
    forward = functools.partial(_forward, **band)
    fields["doc_labels"] = np.where(fields["doc_labels"] > 0, READ_LABEL, 0).astype(np.int32)
    marked = TrainBatch(*(jnp.asarray(fields[k]) for k in st.BATCH_FIELDS))
    active = (fields["roles"] <= 0) & (fields["mask"] > 0)

    def edited(doc_of_row):  # the batch with document doc_of_row[b] of each row b redrawn
        out = {k: v.copy() for k, v in fields.items()}
        rng = np.random.default_rng(9)
        for b, d in enumerate(doc_of_row):
            where = out["roles"][b] == d
            out["tokens"][b][where] = rng.integers(8, CFG.vocab_size, where.sum())
        return TrainBatch(*(jnp.asarray(out[k]) for k in st.BATCH_FIELDS))

    read = forward(CFG, params, marked, read_target=True)
    routed = forward(CFG, params, marked)
    np.testing.assert_allclose(read.doc_scores[0], routed.doc_scores[0], rtol=1e-6)
    np.testing.assert_array_equal(read.selected[0], routed.selected[0])
    target = fields["doc_labels"].argmax(1) + 1  # [B] the marked document of each row
    chosen = np.asarray(routed.selected[0])  # [B, 2] top-2 of 3 documents
    unmarked = np.where(chosen[:, 0] == target, chosen[:, 1], chosen[:, 0])  # selected, unmarked
    hidden = lambda out: np.asarray(out.hidden)[active]  # noqa: E731
    # the routed forward reads the unmarked document it selected; read_target does not
    moved = hidden(forward(CFG, params, edited(unmarked))) - hidden(routed)
    np.testing.assert_allclose(hidden(forward(CFG, params, edited(unmarked), read_target=True)),
                               hidden(read), rtol=1e-6, atol=1e-6)
    changed = hidden(forward(CFG, params, edited(target), read_target=True)) - hidden(read)
    assert np.abs(changed).max() > 1e-2  # the marked document is read
    assert np.abs(moved).max() > 1e-2  # the routed forward reads what it selects


def test_shared_selection_reads_the_first_router_layers_documents():
    """msa.shared_selection: both router layers (1, 2 of 3) read layer 1's top-2, so the forward
    equals read_target with those documents marked; each layer's own scores and selection (the
    routing loss's and the recall's) are those of the forward without the option."""
    from msa_jax.model.train_forward import READ_LABEL

    cfg = CFG.replace(num_layers=3, msa=dataclasses.replace(CFG.msa, router_layers=(1, 2)))
    shared = cfg.replace(msa=dataclasses.replace(cfg.msa, shared_selection=True))
    params = init_params(cfg, 0)
    batch = batch_of(cfg, seed=5, b=4)
    own, out = _forward(cfg, params, batch), _forward(shared, params, batch)
    first, second = (np.asarray(s) for s in own.selected)  # [B, 2] document numbers 1..M
    assert any(set(a) != set(b) for a, b in zip(first, second))  # layer 2 chooses otherwise
    for a, b in zip(own.selected + own.doc_scores, out.selected + out.doc_scores):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    labels = np.zeros(np.asarray(batch.doc_labels).shape, np.int32)
    np.put_along_axis(labels, first - 1, READ_LABEL, axis=1)  # the documents layer 1 selected
    marked = batch.replace(doc_labels=jnp.asarray(labels))
    read = _forward(cfg, params, marked, read_target=True)
    np.testing.assert_allclose(np.asarray(out.hidden), np.asarray(read.hidden), rtol=1e-6,
                               atol=1e-6)
    assert np.abs(np.asarray(out.hidden) - np.asarray(own.hidden)).max() > 1e-3
    with pytest.raises(ValueError, match="remat"):
        _forward(shared.replace(remat=True), params, batch)


def test_frozen_routing_keeps_the_first_router_layers_scores():
    """optim.freeze="routing": after training steps the first router layer's routing scores (so
    its selection) are those of the initial params, while the layers above it have moved (the
    second router layer's scores and the hidden states change)."""
    cfg = CFG.replace(num_layers=3, msa=dataclasses.replace(CFG.msa, router_layers=(1, 2)))
    ocfg = optim.OptimConfig(phases=(optim.Phase(steps=5, lr=1e-2),), freeze="routing")
    with pytest.raises(ConfigError, match="routing_layer"):
        optim.make_optimizer(ocfg)
    tx = optim.make_optimizer(ocfg, routing_layer=1)
    params = init_params(cfg, 0)
    batch = batch_of(cfg, seed=5, b=4)
    step = jax.jit(st.make_step(cfg, ocfg, tx, M))
    state = st.init_state(params, tx)
    for _ in range(3):
        state, _ = step(state, batch)
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, params)
    assert not any(jax.tree.leaves(moved["embed_tokens"]) + jax.tree.leaves(moved["layers_0"]))
    assert not moved["layers_1"]["input_layernorm"]["scale"]
    for layer in ("layers_1", "layers_2"):
        attn = moved[layer]["self_attn"]
        assert not attn["router_q_proj"]["kernel"] and not attn["router_k_proj"]["kernel"]
    assert moved["layers_1"]["self_attn"]["q_proj"]["kernel"] and moved["lm_head"]["kernel"]
    before, after = _forward(cfg, params, batch), _forward(cfg, state.params, batch)
    # the same computation on the same (unchanged) params: equal
    np.testing.assert_array_equal(np.asarray(after.doc_scores[0]),
                                  np.asarray(before.doc_scores[0]))
    a, b = np.asarray(after.doc_scores[1]), np.asarray(before.doc_scores[1])
    real = np.isfinite(b)  # -inf: no document in that slot
    assert np.abs(a[real] - b[real]).max() > 1e-4


def test_banded_forward_and_batch_negatives_compute_the_same_function():
    """max_segment (banded document attention, memory attention for the active tokens only) and
    batch_rows (questions scored against the whole batch) change how, not what: hidden states
    and in-sample scores match the whole-row forward within F32_REASSOC; the batch scores'
    diagonal blocks are the in-sample scores, and an off-diagonal block equals scoring that
    question against the other sample's documents by hand (numpy)."""
    from tests.tolerances import F32_REASSOC

    params = init_params(CFG, 0)
    batch = batch_of(CFG, seed=3, b=3)
    ref = _forward(CFG, params, batch)
    seg = int(np.max([(np.asarray(batch.roles[b]) == d).sum() for b in range(3)
                      for d in range(1, M + 1)]))
    active = int(np.max(((np.asarray(batch.roles) <= 0) & (np.asarray(batch.mask) > 0)).sum(1)))
    head = len(CFG.msa.prefix_token_ids)
    got = _forward(CFG, params, batch, batch_rows=16, max_segment=seg, max_active=active - head)
    np.testing.assert_allclose(got.hidden, ref.hidden, **F32_REASSOC)
    for g, r in zip(got.doc_scores, ref.doc_scores):
        np.testing.assert_allclose(g, r, **F32_REASSOC)
    every = np.asarray(got.batch_scores[0]).reshape(3, 3, M + 1)
    for b in range(3):
        np.testing.assert_array_equal(every[b, b], np.asarray(got.doc_scores[0])[b])
    # question of row 0 against row 1's documents = row 0's question put in front of row 1's docs
    swapped = dict((k, np.asarray(getattr(batch, k)).copy()) for k in st.BATCH_FIELDS)
    q0 = (swapped["roles"][0] <= 0) & (swapped["mask"][0] > 0)
    q1 = (swapped["roles"][1] <= 0) & (swapped["mask"][1] > 0)
    assert q0.sum() == q1.sum()  # keyed_batch: one active length, so row 0's fits in row 1
    for k in ("tokens", "positions", "roles", "labels"):
        swapped[k][1][q1] = swapped[k][0][q0]
    cross = _forward(CFG, params, TrainBatch(*(jnp.asarray(swapped[k]) for k in st.BATCH_FIELDS)))
    np.testing.assert_allclose(every[0, 1], np.asarray(cross.doc_scores[0])[1], **F32_REASSOC)
    assert np.isfinite(every[0, 1, 1:]).all() and not np.allclose(every[0, 1], every[1, 1])


def test_segment_and_routing_limits_are_checked_by_the_packer():
    from msa_jax.training.packing import Buckets
    from msa_jax.training.samples import SampleError

    with pytest.raises(SampleError, match="sample 's1'.*document of 300 tokens.*max_segment=256"):
        Buckets((1024,), (8,), 0, 256, 256).check("s1", 900, 4, 10, 300, 20)
    with pytest.raises(SampleError, match="sample 's4'.*span 300 tokens.*max_active=256"):
        Buckets((1024,), (8,), 0, 256, 256).check("s4", 900, 4, 10, 30, 300)
    with pytest.raises(SampleError, match="sample 's2'.*70 routing-query tokens.*routing_rows=64"):
        Buckets((1024,), (8,), 64, 0).check("s2", 900, 4, 70, 10)
    Buckets((1024,), (8,), 64, 256, 128).check("s3", 900, 4, 64, 256, 128)  # at the limits
