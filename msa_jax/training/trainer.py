"""The training loop: data -> jitted data-parallel step -> metrics, checkpoints, evaluation.

    trainer = Trainer(cfg, optim_cfg, data, workdir="runs/tiny")
    state = trainer.run()            # resumes from workdir/checkpoints if there is one
    trainer.export("runs/tiny/export")

`data(start)` returns an iterator of batches (numpy dicts with the TrainBatch fields and
`num_docs`) beginning at batch index `start`: the data position is the number of batches consumed,
which is also the state's step, so a resumed run asks for exactly the batches the killed run had
not finished (the pipeline maps index -> batch deterministically). Batches of another `num_docs`
(a shape bucket) get their own compiled step.

Every `log_every` steps the metrics (LM loss, routing loss, per-layer in-batch recall@1/5/10,
learning rate, gradient norm, tokens/s) go to the progress bar, JSONL and TensorBoard; every
`eval_every` steps `eval_fn(cfg, params)` runs (e.g. large-memory recall,
msa_jax.training.evaluate) and its values are logged too; every `checkpoint_every` steps and at
the end the state is saved (asynchronously).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterator, Mapping

import jax
import numpy as np

from msa_jax.config import ModelConfig
from msa_jax.errors import ConfigError
from msa_jax.model.params import init_params
from msa_jax.training import optim
from msa_jax.training.checkpoint import Checkpoints, config_fingerprint, export
from msa_jax.training.metrics import MetricsWriter
from msa_jax.training.step import TrainState, data_mesh, init_state, jit_step, place_state, \
    shard_batch
from msa_jax.utils import progress

log = logging.getLogger(__name__)
DataFn = Callable[[int], Iterator[Mapping[str, np.ndarray]]]
EvalFn = Callable[[ModelConfig, object], Mapping[str, float]]


class Trainer:
    def __init__(self, cfg: ModelConfig, ocfg: optim.OptimConfig, data: DataFn, workdir: str, *,
                 params=None, seed: int = 0, mesh=None, checkpoint_every: int = 100,
                 keep: int = 3, log_every: int = 1, eval_every: int = 0,
                 eval_fn: EvalFn | None = None, show_progress: bool = True,
                 tensorboard: bool = True, async_save: bool = True, tokenizer=None,
                 meta: Mapping | None = None):
        if not cfg.is_msa or not cfg.msa.router_layers:
            raise ConfigError("training needs an MSA model config with router layers "
                             "(model.msa.router_layers)")
        for name, value in (("checkpoint_every", checkpoint_every), ("log_every", log_every)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        self.cfg, self.ocfg, self.data, self.workdir = cfg, ocfg, data, workdir
        self.mesh = mesh if mesh is not None else data_mesh()
        self.tx = optim.make_optimizer(ocfg, routing_layer=cfg.msa.router_layers[0])
        self.checkpoint_every, self.log_every = checkpoint_every, log_every
        self.eval_every, self.eval_fn = eval_every, eval_fn
        self.show_progress, self.tokenizer = show_progress, tokenizer
        self.meta = dict(meta or {})
        self.fingerprint = config_fingerprint(cfg)
        self.ckpt = Checkpoints(workdir, keep=keep, async_save=async_save)
        fresh = params if params is not None else init_params(cfg, seed)
        self.state = place_state(cfg, self.mesh, init_state(fresh, self.tx, seed))
        self.resumed_from = None
        if self.ckpt.latest_step is not None:
            self.resumed_from = self.ckpt.latest_step
            self.state, _ = self.ckpt.restore(self.state, fingerprint=self.fingerprint)
            log.info("resumed from %s step %d", self.ckpt.directory, self.resumed_from)
        # one log per run: in a run of several processes only process 0 writes metrics
        self.primary = jax.process_index() == 0
        self.writer = MetricsWriter(workdir, int(self.state.step), tensorboard, self.primary)
        self._steps: dict[int, Callable] = {}

    @property
    def total_steps(self) -> int:
        """Micro-batches of the whole schedule (updates x accumulate_steps)."""
        return self.ocfg.total_steps * self.ocfg.accumulate_steps

    @property
    def step(self) -> int:
        return int(self.state.step)

    def _step_fn(self, num_docs: int):
        if num_docs not in self._steps:
            self._steps[num_docs] = jit_step(self.cfg, self.ocfg, self.tx, num_docs, self.mesh,
                                             self.state)
        return self._steps[num_docs]

    def _save(self, step: int):
        self.ckpt.save(step, self.state, {"data_position": step, "step": step,
                                          "model_fingerprint": self.fingerprint, **self.meta})

    def run(self, num_steps: int | None = None) -> TrainState:
        """Train until the schedule's end (or `num_steps` more steps); returns the state."""
        start = self.step
        end = self.total_steps if num_steps is None else min(self.total_steps, start + num_steps)
        if start >= end:
            return self.state
        bar = progress(total=end, initial=start, desc="train", unit="step",
                       enabled=self.show_progress and self.primary)
        batches = self.data(start)
        tic, tokens = time.perf_counter(), 0
        try:
            for step in range(start, end):
                batch = next(batches)
                num_docs = int(np.asarray(batch["num_docs"]))
                self.state, metrics = self._step_fn(num_docs)(self.state,
                                                              shard_batch(self.mesh, batch))
                done = step + 1
                tokens += int(metrics["tokens"])
                if done % self.log_every == 0 or done == end:
                    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    elapsed = time.perf_counter() - tic
                    values["tokens_per_s"] = tokens / max(elapsed, 1e-9)
                    tic, tokens = time.perf_counter(), 0
                    if self.eval_fn is not None and self.eval_every and \
                            done % self.eval_every == 0:
                        values.update(self.eval_fn(self.cfg, self.state.params))
                    self.writer.write(done, values)
                    bar.set_postfix(_postfix(self.cfg, values), refresh=False)
                bar.update(1)
                if done % self.checkpoint_every == 0 or done == end:
                    self._save(done)
        finally:
            bar.close()
            self.writer.flush()
        return self.state

    def evaluate(self) -> dict[str, float]:
        if self.eval_fn is None:
            raise ConfigError("this trainer has no eval_fn")
        return dict(self.eval_fn(self.cfg, self.state.params))

    def export(self, path: str, step: int | None = None, overwrite: bool = False,
               source: str | None = None) -> str:
        """Hugging Face folder of the current params, or of checkpoint `step`."""
        state = self.state
        if step is not None and step != self.step:
            self.ckpt.wait()
            state, _ = self.ckpt.restore(self.state, step, self.fingerprint)
        return export(path, self.cfg, state.params, tokenizer=self.tokenizer, overwrite=overwrite,
                      source=source)

    def close(self):
        self.ckpt.close()
        self.writer.close()


def _postfix(cfg: ModelConfig, values: Mapping[str, float]) -> dict[str, str]:
    last = cfg.msa.router_layers[-1]
    out = {"loss": f"{values['loss']:.3f}", "lm": f"{values['lm_loss']:.3f}",
           "aux": f"{values['aux_loss']:.3f}", "r@1": f"{values[f'recall@1/layer{last}']:.2f}",
           "tok/s": f"{values['tokens_per_s']:,.0f}"}
    if "eval/recall@1" in values:
        out["eval r@1"] = f"{values['eval/recall@1']:.2f}"
    return out
