"""Checkpoints on orbax: the train state and the data position, resumed from the work directory.

`Checkpoints(workdir)` wraps an `orbax.checkpoint.CheckpointManager` over `workdir/checkpoints`:
saves are asynchronous (the step goes on while the arrays are written) and atomic (orbax writes
into a temporary folder and renames it when complete, so a run killed mid-save leaves the last
finished step as the latest), and only the last `keep` steps are kept. A checkpoint holds two
items: `state` (params, optimiser state, step, RNG: a pytree restored with the shapes, dtypes and
shardings of a freshly built state) and `meta` (JSON: data position, config, a fingerprint of the
model config so that resuming with another model is refused).

`export(...)` writes any state's parameters in the Hugging Face layout (config.json + safetensors
+ tokenizer) through `msa_jax.convert.save_pretrained` (what `MSAModel.save_pretrained` runs):
the folder `from_pretrained`, `msa-jax encode`,
`ask` and `demo` load.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from msa_jax.config import ModelConfig
from msa_jax.convert import save_pretrained
from msa_jax.errors import CheckpointError, ConfigError
from msa_jax.training.step import TrainState

STATE, META = "state", "meta"


def _abstract(state: TrainState):
    """ShapeDtypeStructs (with shardings) of a state, the restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        state)


def _as_tree(state: TrainState) -> dict:
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state,
            "rng": state.rng}


class Checkpoints:
    """Checkpoint manager of one work directory."""

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
        if keep < 1:
            raise ConfigError(f"train.keep must be >= 1, got {keep}")
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=(STATE, META))

    @property
    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: TrainState, meta: dict[str, Any], force: bool = True):
        """Starts an asynchronous save of `state` and `meta` at `step`."""
        self.manager.save(step, args=ocp.args.Composite(
            **{STATE: ocp.args.StandardSave(_as_tree(state)), META: ocp.args.JsonSave(meta)}),
            force=force)

    def restore(self, target: TrainState, step: int | None = None,
                fingerprint: str | None = None) -> tuple[TrainState, dict]:
        """(state, meta) of `step` (default: the latest), placed like `target`."""
        step = self.latest_step if step is None else step
        if step is None:
            raise CheckpointError(f"{self.directory}: no checkpoint to restore")
        meta = self.manager.restore(step, args=ocp.args.Composite(
            **{META: ocp.args.JsonRestore()}))[META]
        if fingerprint is not None and meta.get("model_fingerprint") != fingerprint:
            raise CheckpointError(
                f"{self.directory} step {step} was written for another model config "
                f"({meta.get('model_fingerprint')}, this run {fingerprint}); use another "
                "--workdir or the same model settings")
        tree = self.manager.restore(step, args=ocp.args.Composite(
            **{STATE: ocp.args.StandardRestore(_as_tree(_abstract(target)))}))[STATE]
        return TrainState(tree["step"], tree["params"], tree["opt_state"], tree["rng"]), meta

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def config_fingerprint(cfg: ModelConfig) -> str:
    """The model settings a checkpoint's parameters depend on (not the kernel or dtype policy)."""
    import hashlib
    import json

    d = cfg.to_hf()
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def export(path: str, cfg: ModelConfig, params, tokenizer=None, overwrite: bool = False,
           source: str | None = None, dtype: str | None = None) -> str:
    """Write params in the Hugging Face layout (atomic), loadable by `msa_jax.from_pretrained`.
    Tokenizer files come from `source` (a checkpoint folder) if given, else from `tokenizer`."""
    tok = tokenizer if source is None else None
    save_pretrained(path, cfg, jax.device_get(params), dtype=dtype, overwrite=overwrite,
                    copy_from=source, write_extra=tok.save if tok else None)
    return path
