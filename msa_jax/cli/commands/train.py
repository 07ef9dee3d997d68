"""Train an MSA model (optax + grain + orbax): resumes automatically from --workdir.

--config is a recipe (configs/train_tiny.py): model, optim (the paper's two phases), data (the
synthetic retrieval task and the pipeline), eval (router recall among a large held-out memory),
train (loop settings); override any key with --config.section.key=VALUE. Without --init_from the
model is the recipe's preset with random weights and the byte tokenizer; --init_from=DIR starts
from a converted Qwen3 checkpoint (upgraded to MSA with the recipe's router settings) or an MSA
one. Checkpoints go to WORKDIR/checkpoints, metrics to WORKDIR/metrics.jsonl and
WORKDIR/tensorboard, and the final params to WORKDIR/export (Hugging Face layout, loadable by
`encode`, `ask`, `demo` and `from_pretrained`). Run the same command again to resume.
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags

from msa_jax.cli import common

NAME = "train"
SUMMARY = "train an MSA model from a recipe config (resumes from --workdir)"
USAGE = ("--config=configs/train_tiny.py --workdir=DIR [--config.section.key=VALUE ...] "
         "[--init_from=DIR] [--steps=N] [--noprogress]")


def define_flags(fv: flags.FlagValues, argv):
    flags.DEFINE_string("workdir", None, "Work directory: checkpoints, metrics, export; an "
                        "existing one is resumed.", flag_values=fv)
    flags.mark_flag_as_required("workdir", flag_values=fv)
    flags.DEFINE_string("init_from", None, "Start from this checkpoint folder (Qwen3 or MSA, "
                        "Hugging Face layout) instead of random weights.", flag_values=fv)
    flags.DEFINE_integer("steps", None, "Stop after this many more steps (default: the whole "
                         "schedule).", lower_bound=1, flag_values=fv)
    flags.DEFINE_boolean("progress", True, "Show a progress bar.", flag_values=fv)
    from msa_jax.cli.commands.smoke import default_config_path

    common.define_config_flag(fv, argv, default_config_path("train_tiny.py"),
                              "a training recipe; default: configs/train_tiny.py")


def _section(config, name: str):
    if name not in config:
        raise common.UsageError(f"--config has no {name!r} section (see configs/train_tiny.py)")
    return config[name]


def _phase(c, name: str):
    from msa_jax.training.optim import Phase

    fields = {f.name for f in dataclasses.fields(Phase)} - {"name"}
    unknown = sorted(set(c.keys()) - fields)
    if unknown:
        raise common.UsageError(f"--config.optim.{name} has unknown keys {unknown}")
    return Phase(name=name, **{k: c[k] for k in c.keys()})


def optim_config(config):
    from msa_jax.training.optim import OptimConfig

    o = _section(config, "optim")
    phases = tuple(_phase(o[n], n) for n in ("warmup", "main") if n in o and o[n].steps > 0)
    return OptimConfig(phases=phases, weight_decay=o.weight_decay, clip_norm=o.clip_norm,
                       accumulate_steps=o.accumulate_steps, freeze=o.freeze,
                       batch_negatives=o.get("batch_negatives", 0),
                       max_segment=o.get("max_segment", 0),
                       max_active=o.get("max_active", 0),
                       read=o.get("read", "routed"))


def _tokenizer(m):
    """The recipe's tokenizer: "byte" (default) or "bpe" (msa_jax.data.bpe, trained on the
    synthetic tasks' text with `bpe_vocab_size` ids; deterministic)."""
    kind = m.get("tokenizer", "byte")
    if kind == "byte":
        from msa_jax.data import ByteTokenizer
        return ByteTokenizer()
    if kind == "bpe":
        from msa_jax.data.bpe import synthetic_training_text, train_bpe
        return train_bpe(synthetic_training_text(), m.get("bpe_vocab_size", 1024))
    raise common.UsageError(f"--config.model.tokenizer={kind!r}; expected 'byte' or 'bpe'")


def _random_model(m, policy: dict, msa_keys: dict):
    """(cfg, tokenizer) of a fresh model: the preset with the recipe's `sizes` and `msa`
    overrides; vocab_size 0 = the tokenizer's."""
    import msa_jax

    tok = _tokenizer(m)
    sizes = dict(m.get("sizes", {}))
    vocab = m.vocab_size or tok.vocab_size
    cfg = msa_jax.preset(m.preset, vocab_size=vocab, **sizes, **policy)
    if not cfg.is_msa:
        raise common.UsageError(f"--config.model.preset={m.preset!r} has no MSA router "
                                "layers; pick an MSA preset (e.g. tiny-msa)")
    msa = dict(m.get("msa", {}))
    if "router_layers" in msa:
        msa["router_layers"] = tuple(msa["router_layers"])
    cfg = cfg.replace(msa=dataclasses.replace(cfg.msa, **msa, **msa_keys))
    cfg, attached = common.attach_tokenizer(cfg, tok)
    if attached is None:
        raise common.UsageError(f"--config.model.vocab_size={m.vocab_size} is smaller than "
                                f"the tokenizer's {tok.vocab_size}")
    return cfg, attached


def model_and_tokenizer(config, init_from: str | None):
    """(ModelConfig, params or None (random), tokenizer) from the recipe's model section."""
    import msa_jax
    from msa_jax.config import MSAConfig

    m = _section(config, "model")
    policy = dict(dtype=m.dtype, param_dtype=m.param_dtype,
                  kernel_implementation=m.kernel_implementation, remat=m.remat)
    msa_keys = dict(top_k_docs=m.top_k_docs, aux_loss_method=m.aux_loss_method,
                    inference_score_mode=m.inference_score_mode,
                    shared_selection=bool(m.get("shared_selection", False)))
    if init_from:
        common.require_dir(init_from, "--init_from checkpoint")
        base = msa_jax.from_pretrained(init_from)
        msa = base.cfg.msa or MSAConfig(router_layers=tuple(range(base.cfg.num_layers // 2,
                                                                   base.cfg.num_layers)))
        if base.cfg.msa is None:  # a plain Qwen3 checkpoint: upgrade it to MSA
            base = msa_jax.from_pretrained(init_from, msa=msa)
        cfg = base.cfg.replace(msa=dataclasses.replace(base.cfg.msa, **msa_keys), **policy)
        params = base.params
        tok = base.tokenizer
        if tok is None:
            raise msa_jax.CheckpointError(f"--init_from {init_from}: no tokenizer files beside "
                                          "the weights")
    else:
        cfg, tok = _random_model(m, policy, msa_keys)
        params = None
    return cfg, params, tok


def training_samples(d):
    """The recipe's training samples: the JSONL file `data.samples`, else the synthetic task;
    of them, the steps `data.kinds` names ("retrieve": `[id]` responses, "answer": answer
    steps; default both)."""
    from msa_jax.data.synthetic import FACTS_PER_DOC
    from msa_jax.training import samples, tasks

    kinds = tuple(d.get("kinds", ("retrieve", "answer")))
    if not kinds or set(kinds) - {"retrieve", "answer"}:
        raise common.UsageError(f"--config.data.kinds={kinds}: expected a non-empty subset of "
                                "('retrieve', 'answer')")
    if d.get("samples"):
        out = samples.load_samples(d.samples)
    else:
        out = []
        hops = (d.hops,) if isinstance(d.hops, int) else tuple(d.hops)
        for i, h in enumerate(hops):  # one task per chain length, each with its own seed
            out += tasks.make_retrieval_samples(d.num_queries, hops=h,
                                                docs_per_sample=d.docs_per_sample,
                                                hard_negatives=d.hard_negatives, seed=d.seed + i,
                                                with_answer=d.get("with_answer", False),
                                                id_digits=d.get("id_digits", 0),
                                                facts_per_doc=tuple(d.get("facts_per_doc",
                                                                          FACTS_PER_DOC)),
                                                answer_routing=d.get("answer_routing", True))
    out = [s for s in out if ("answer" if s.answer is not None else "retrieve") in kinds]
    if not out:
        source = f"samples of {d.samples}" if d.get("samples") else "samples"
        raise common.UsageError(f"--config.data.kinds={kinds} keeps none of the {source} "
                                "(answer steps need data.with_answer or samples with answers)")
    return out


def build(config, workdir: str, init_from: str | None = None, show_progress: bool = True):
    """The Trainer a recipe describes (also used by the notebook and the tests)."""
    import jax

    from msa_jax.model.params import INIT_STD, init_params
    from msa_jax.training import evaluate, losses, pipeline, tasks
    from msa_jax.training.trainer import Trainer

    cfg, params, tok = model_and_tokenizer(config, init_from)
    losses.check_method(cfg.msa.aux_loss_method)
    ocfg = optim_config(config)
    d, e, t = (_section(config, n) for n in ("data", "eval", "train"))
    if params is None:  # random weights: the recipe may widen the embedding's init
        params = init_params(cfg, t.seed, embedding_std=_section(config, "model").get(
            "embedding_init_std", INIT_STD))
    samples = training_samples(d)
    pcfg = pipeline.PipelineConfig(batch_size=d.batch_size, length_buckets=d.length_buckets,
                                   doc_buckets=d.doc_buckets, worker_count=d.worker_count,
                                   prefetch=d.prefetch, routing_rows=ocfg.batch_negatives,
                                   max_segment=ocfg.max_segment,
                                   max_active=ocfg.max_active)

    # every sample checked against the buckets and the vocabulary now, before any compilation
    batches = pipeline.StepBatches(samples, tok, cfg, pcfg, seed=d.seed,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count())

    def data(start: int):
        return pipeline.batch_iterator(batches, start)

    eval_fn = None
    if e.every:
        held_out = tasks.make_eval_set(e.num_queries, e.memory_docs,
                                       hops=d.hops if isinstance(d.hops, int) else d.hops[0],
                                       hard_negatives=d.hard_negatives)
        docs, questions = evaluate.eval_inputs(held_out, tok)

        def eval_fn(cfg_, params_):
            return evaluate.evaluate(cfg_, params_, docs, questions, e.batch_size)

    return Trainer(cfg, ocfg, data, workdir, params=params, seed=t.seed,
                   checkpoint_every=t.checkpoint_every, keep=t.keep, log_every=t.log_every,
                   eval_every=e.every, eval_fn=eval_fn, show_progress=show_progress,
                   tokenizer=tok, meta={"config": config.to_json()})


def execute(fv: flags.FlagValues, config):
    with common.Timer() as timer:
        trainer = build(config, fv.workdir, fv.init_from, fv.progress)
        if trainer.resumed_from is not None:
            print(f"resuming {fv.workdir} from step {trainer.resumed_from}", flush=True)
        start = trainer.step
        try:
            trainer.run(fv.steps)
        finally:
            trainer.close()
    print(f"trained steps {start}..{trainer.step} of {trainer.total_steps} in "
          f"{timer.seconds:.1f} s (JIT compilation included); checkpoints in "
          f"{trainer.ckpt.directory}")
    if trainer.step >= trainer.total_steps and config.train.export:
        path = trainer.export(os.path.join(fv.workdir, "export"), overwrite=True)
        print(f"exported the final params to {path}")
