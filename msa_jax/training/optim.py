"""Optimisation on optax: AdamW, per-phase warm-up + decay, clipping, accumulation, groups.

Training runs in *phases* (docs/msa.md §6): the paper's router warm-up `0.1·L_LM + L_aux` at
lr 1e-4, then `L_LM + 0.1·L_aux` annealed to 6e-6. Each `Phase` has its own loss weights and its
own learning-rate schedule (linear warm-up, then cosine / linear decay or constant); the phases'
schedules are joined with `optax.join_schedules`, so the step count alone says where training is.

Parameters fall into two groups, the router projections (`router_q_proj`, `router_k_proj`) and
the rest, partitioned with `optax.multi_transform`: each group gets its own learning-rate scale
per phase, and either group can be frozen (`optax.set_to_zero`). `freeze="routing"` freezes
what the first router layer's routing scores are computed from (the token embedding, the layers
below it, its input norm) and every router projection: with `msa.shared_selection` (every
router layer reads the first one's choice) the documents a question selects then stay exactly
as they were, while the layers above learn to read. Updates are clipped by global
norm; `accumulate_steps > 1` wraps everything in `optax.MultiSteps` (one update every N micro-batches).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from msa_jax.config import ConfigError

ROUTER, BACKBONE = "router", "backbone"
ROUTING, FROZEN = "routing", "frozen"  # a freeze mode; the label of what it freezes
FREEZES = ("", ROUTER, BACKBONE, ROUTING)
DECAYS = ("cosine", "linear", "constant")


@dataclasses.dataclass(frozen=True)
class Phase:
    """A stretch of `steps` optimiser updates with its loss weights and learning-rate schedule.

    loss = lm_weight * L_LM + aux_weight * L_aux. The learning rate rises linearly from 0 to `lr`
    over `warmup_steps`, then decays to `end_lr` (cosine / linear) or stays (constant). Each
    group's rate is further multiplied by its scale (0 stops that group's updates in this phase).
    """

    steps: int
    lr: float
    lm_weight: float = 1.0
    aux_weight: float = 0.1
    warmup_steps: int = 0
    decay: str = "cosine"
    end_lr: float = 0.0
    router_lr_scale: float = 1.0
    backbone_lr_scale: float = 1.0
    name: str = ""

    def check(self, where: str):
        if self.steps < 1:
            raise ConfigError(f"{where}.steps must be >= 1, got {self.steps}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ConfigError(f"{where}.warmup_steps must be in 0..steps ({self.steps}), got "
                              f"{self.warmup_steps}")
        if self.decay not in DECAYS:
            raise ConfigError(f"{where}.decay={self.decay!r}; expected one of {DECAYS}")
        for name in ("lr", "end_lr", "lm_weight", "aux_weight", "router_lr_scale",
                     "backbone_lr_scale"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name} must be >= 0, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    phases: tuple[Phase, ...] = (Phase(steps=100, lr=1e-3, warmup_steps=10),)
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    clip_norm: float = 1.0  # global-norm clipping of the gradient; 0 = none
    accumulate_steps: int = 1  # micro-batches per update (optax.MultiSteps)
    # "", "router" or "backbone": that group never moves; "routing": the router projections and
    # everything below the first router layer's routing scores (make_optimizer's routing_layer)
    freeze: str = ""
    # routing-loss negatives: 0 = the sample's own documents; R > 0 = every document of the
    # global batch, each question scored from up to R routing tokens (the packer checks)
    batch_negatives: int = 0
    # banded attention (train_forward): 0 = whole rows; S > 0 = no document is longer than S
    # tokens and no question + target longer than max_active (the packer checks both)
    max_segment: int = 0
    max_active: int = 0
    # what the LM path reads in router layers: "routed" = the router's top-k (the paper);
    # "target" = the step's right documents (teacher-forced selection; train_forward)
    read: str = "routed"

    def __post_init__(self):
        if not self.phases:
            raise ConfigError("optim.phases is empty: give at least one phase")
        for i, p in enumerate(self.phases):
            p.check(f"optim.{p.name}" if p.name else f"optim.phases[{i}]")
        if self.accumulate_steps < 1:
            raise ConfigError(f"optim.accumulate_steps must be >= 1, got {self.accumulate_steps}")
        if self.read not in ("routed", "target"):
            raise ConfigError(f"optim.read={self.read!r}; expected 'routed' or 'target'")
        if self.freeze not in FREEZES:
            raise ConfigError(f"optim.freeze={self.freeze!r}; expected one of {FREEZES}")
        if (self.max_segment > 0) != (self.max_active > 0):
            raise ConfigError("optim.max_segment and optim.max_active go together (both > 0 "
                              "for banded attention, or both 0)")
        for name in ("batch_negatives", "max_segment", "max_active"):
            if getattr(self, name) < 0:
                raise ConfigError(f"optim.{name} must be >= 0, got {getattr(self, name)}")
        if self.clip_norm < 0 or self.weight_decay < 0:
            raise ConfigError("optim.clip_norm and optim.weight_decay must be >= 0")

    @property
    def total_steps(self) -> int:
        """Optimiser updates over all phases."""
        return sum(p.steps for p in self.phases)

    @property
    def boundaries(self) -> list[int]:
        """The update index at which each phase after the first starts."""
        out, n = [], 0
        for p in self.phases[:-1]:
            n += p.steps
            out.append(n)
        return out


def _phase_schedule(p: Phase, scale: float) -> optax.Schedule:
    peak, end = p.lr * scale, p.end_lr * scale
    rest = p.steps - p.warmup_steps
    if p.decay == "cosine" and rest > 0:
        after = optax.cosine_decay_schedule(peak, rest, alpha=end / peak if peak else 0.0)
    elif p.decay == "linear" and rest > 0:
        after = optax.linear_schedule(peak, end, rest)
    else:
        after = optax.constant_schedule(peak)
    if not p.warmup_steps:
        return after
    warm = optax.linear_schedule(0.0, peak, p.warmup_steps)
    return optax.join_schedules([warm, after], [p.warmup_steps])


def learning_rate(cfg: OptimConfig, group: str = BACKBONE) -> optax.Schedule:
    """The learning rate of a group as a function of the update count (all phases joined)."""
    attr = "router_lr_scale" if group == ROUTER else "backbone_lr_scale"
    schedules = [_phase_schedule(p, getattr(p, attr)) for p in cfg.phases]
    if len(schedules) == 1:
        return schedules[0]
    return optax.join_schedules(schedules, cfg.boundaries)


def loss_weights(cfg: OptimConfig, update: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(lm_weight, aux_weight) of the phase that update index `update` (traced int) falls in."""
    index = jnp.searchsorted(jnp.asarray(cfg.boundaries, jnp.int32), update, side="right")
    lm = jnp.asarray([p.lm_weight for p in cfg.phases], jnp.float32)[index]
    aux = jnp.asarray([p.aux_weight for p in cfg.phases], jnp.float32)[index]
    return lm, aux


def _in_routing_path(names: list[str], routing_layer: int) -> bool:
    """Whether a parameter feeds layer `routing_layer`'s routing scores (router projections
    aside): the token embedding, the layers below it, and its input norm."""
    if names[0] == "embed_tokens":
        return True
    head, _, index = names[0].rpartition("_")
    if head != "layers" or not index.isdigit():
        return False
    return int(index) < routing_layer or (int(index) == routing_layer
                                          and names[1] == "input_layernorm")


def param_groups(params, routing_layer: int | None = None) -> dict:
    """Pytree of group labels: ROUTER for the router projections, BACKBONE for the rest; with
    `routing_layer`, FROZEN for the rest of what that layer's routing scores depend on."""
    def label(path, _):
        names = [str(getattr(k, "key", k)) for k in path]
        if any(n.startswith("router_") for n in names):
            return ROUTER
        if routing_layer is not None and _in_routing_path(names, routing_layer):
            return FROZEN
        return BACKBONE

    return jax.tree_util.tree_map_with_path(label, params)


def _adamw(cfg: OptimConfig, group: str) -> optax.GradientTransformation:
    if cfg.freeze == group or (cfg.freeze == ROUTING and group == ROUTER):
        return optax.set_to_zero()
    return optax.adamw(learning_rate(cfg, group), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                       weight_decay=cfg.weight_decay, mask=_decay_mask)


def _decay_mask(params):
    """Weight decay on matrices only (not on norm scales)."""
    return jax.tree.map(lambda x: x.ndim > 1, params)


def make_optimizer(cfg: OptimConfig,
                   routing_layer: int | None = None) -> optax.GradientTransformation:
    """clip by global norm -> per-group AdamW (router / backbone) [-> MultiSteps].

    routing_layer: the first router layer (`ModelConfig.msa.router_layers[0]`); needed by
    `freeze="routing"` only."""
    parts: Sequence[optax.GradientTransformation] = []
    if cfg.clip_norm:
        parts = [optax.clip_by_global_norm(cfg.clip_norm)]
    groups = {ROUTER: _adamw(cfg, ROUTER), BACKBONE: _adamw(cfg, BACKBONE)}
    labels = param_groups
    if cfg.freeze == ROUTING:
        if routing_layer is None:
            raise ConfigError("optim.freeze='routing' needs the first router layer "
                              "(make_optimizer(cfg, routing_layer=...))")
        groups[FROZEN] = optax.set_to_zero()
        labels = functools.partial(param_groups, routing_layer=routing_layer)
    tx = optax.chain(*parts, optax.multi_transform(groups, labels))
    if cfg.accumulate_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.accumulate_steps)
    return tx


def update_count(cfg: OptimConfig, micro_step: jax.Array) -> jax.Array:
    """Optimiser updates done after `micro_step` micro-batches."""
    return micro_step // cfg.accumulate_steps
