"""The training loss and the jitted, data-parallel train step.

loss = lm_weight * L_LM + aux_weight * L_aux: the training forward (msa_jax.model.train_forward),
the next-token loss on its logits and the routing loss on its document scores
(msa_jax.training.losses); the weights come from the current phase (msa_jax.training.optim).

Data parallel: every batch field is sharded over the mesh's `data` axis (one process or several:
each process hands in its own rows, `jax.make_array_from_process_local_data` assembles the global
array); parameters and optimiser state are placed by the logical-axis table (msa_jax.sharding:
replicated under the default rules). The loss is a mean over the *global* batch, so a step on N
devices computes the same function as on one.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kernels_pallas.common import accum_dtype
from msa_jax import sharding
from msa_jax.config import ModelConfig
from msa_jax.errors import InputError
from msa_jax.model.decode import logits_of
from msa_jax.model.params import param_shardings
from msa_jax.model.train_forward import TrainBatch, train_forward
from msa_jax.training import optim
from msa_jax.training.losses import batch_labels, lm_loss, router_recall, routing_loss

Array = jax.Array
RECALL_AT = (1, 5, 10)
BATCH_FIELDS = ("tokens", "positions", "roles", "mask", "labels", "doc_labels")


@flax.struct.dataclass
class TrainState:
    """step: micro-batches done (int32 scalar); params; opt_state; rng (a PRNG key array)."""

    step: Array
    params: Any
    opt_state: Any
    rng: Array


def init_state(params, tx: optax.GradientTransformation, seed: int = 0) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params),
                      jax.random.key_data(jax.random.key(seed)))


def loss_and_metrics(cfg: ModelConfig, params, batch: TrainBatch, num_docs: int,
                     lm_weight: Array | float, aux_weight: Array | float,
                     batch_negatives: int = 0, max_segment: int = 0, max_active: int = 0,
                     read_target: bool = False):
    """(weighted loss, metrics): lm_loss, aux_loss, tokens and per router layer recall@1/5/10
    of the sample's documents ("recall@{k}/layer{i}"). batch_negatives R > 0: the routing loss
    ranks each positive against every other document of the (global) batch, the questions
    scored from up to R routing tokens (OptimConfig.batch_negatives); max_segment S > 0:
    banded attention (OptimConfig.max_segment, max_active); read_target: the LM path reads
    the step's right documents (OptimConfig.read="target")."""
    out = train_forward(cfg, params, batch, num_docs, batch_negatives or None,
                        max_segment or None, max_active or None, read_target)
    lm = lm_loss(logits_of(cfg, params, out.hidden), batch.labels)
    if batch_negatives:
        aux = routing_loss(cfg, out.batch_scores, batch_labels(batch.doc_labels))
    else:
        aux = routing_loss(cfg, out.doc_scores, batch.doc_labels)
    metrics = {"lm_loss": lm, "aux_loss": aux, "tokens": jnp.sum(batch.mask > 0)}
    for layer, scores in zip(cfg.msa.router_layers, out.doc_scores):
        for k in RECALL_AT:
            metrics[f"recall@{k}/layer{layer}"] = router_recall(scores[:, 1:], batch.doc_labels, k)
    return lm_weight * lm + aux_weight * aux, metrics


def global_norm(tree) -> Array:
    """sqrt of the sum of squares of every leaf, in accum_dtype (float32, or float64)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(accum_dtype(x.dtype))))
                        for x in jax.tree.leaves(tree)))


def make_step(cfg: ModelConfig, ocfg: optim.OptimConfig, tx: optax.GradientTransformation,
              num_docs: int) -> Callable[[TrainState, TrainBatch], tuple[TrainState, dict]]:
    """The (unjitted) train step for batches of `num_docs` documents per sample."""
    lr = optim.learning_rate(ocfg)

    def step(state: TrainState, batch: TrainBatch):
        update = optim.update_count(ocfg, state.step)
        lm_w, aux_w = optim.loss_weights(ocfg, update)
        grad_fn = jax.value_and_grad(
            lambda p: loss_and_metrics(cfg, p, batch, num_docs, lm_w, aux_w,
                                       ocfg.batch_negatives, ocfg.max_segment,
                                       ocfg.max_active, ocfg.read == "target"), has_aux=True)
        (loss, metrics), grads = grad_fn(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics.update(loss=loss, grad_norm=global_norm(grads), lr=lr(update),
                       lm_weight=lm_w, aux_weight=aux_w)
        return TrainState(state.step + 1, params, opt_state, state.rng), metrics

    return step


# -- placement -------------------------------------------------------------------------------------
def data_mesh(num_devices: int | None = None) -> Mesh:
    """A mesh whose `data` axis spans `num_devices` (default: every device of every process)."""
    n = num_devices or jax.device_count()
    return sharding.make_mesh(data=n, memory=1, model=1, devices=jax.devices()[:n])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, sharding.logical_to_spec(("batch",)))


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def state_shardings(cfg: ModelConfig, mesh: Mesh, state: TrainState):
    """Params by the logical-axis table; an optimiser-state leaf whose key path ends with a
    parameter's path (Adam's moments) follows that parameter; the rest (counts) is replicated."""
    params = param_shardings(cfg, mesh)
    by_path = {_path_names(p): s for p, s in jax.tree_util.tree_flatten_with_path(params)[0]}
    depth = max(len(p) for p in by_path)
    rep = sharding.replicated(mesh)

    def opt_leaf(path, x):
        names = _path_names(path)
        for n in range(min(depth, len(names)), 0, -1):
            if names[-n:] in by_path and np.ndim(x):
                return by_path[names[-n:]]
        return rep

    opt = jax.tree_util.tree_map_with_path(opt_leaf, state.opt_state)
    return TrainState(rep, params, opt, rep)


def place_state(cfg: ModelConfig, mesh: Mesh, state: TrainState) -> TrainState:
    return jax.device_put(state, state_shardings(cfg, mesh, state))


def shard_batch(mesh: Mesh, batch: Mapping[str, np.ndarray]) -> TrainBatch:
    """This process's rows of a batch (numpy dict with the TrainBatch fields) -> a global
    TrainBatch sharded over `data`. The global batch must split evenly over the data axis."""
    s = batch_sharding(mesh)
    n = mesh.shape["data"]
    fields = {}
    for name in BATCH_FIELDS:
        if name not in batch:
            raise InputError(f"batch lacks field {name!r} (has {sorted(batch)})")
        x = np.asarray(batch[name], np.int32)
        rows = x.shape[0] * jax.process_count()
        if rows % n:
            raise InputError(f"batch field {name!r}: {rows} global rows do not split over "
                             f"{n} data-parallel devices")
        fields[name] = jax.make_array_from_process_local_data(s, x)
    return TrainBatch(**fields)


def jit_step(cfg: ModelConfig, ocfg: optim.OptimConfig, tx: optax.GradientTransformation,
             num_docs: int, mesh: Mesh, state: TrainState):
    """The jitted step with the state's placement pinned (state buffers donated)."""
    st = state_shardings(cfg, mesh, state)
    bs = batch_sharding(mesh)
    batch_s = TrainBatch(*([bs] * len(BATCH_FIELDS)))
    rep = sharding.replicated(mesh)
    return jax.jit(make_step(cfg, ocfg, tx, num_docs), in_shardings=(st, batch_s),
                   out_shardings=(st, rep), donate_argnums=0)


def batch_spec() -> PartitionSpec:
    return sharding.logical_to_spec(("batch",))
