"""`msa-jax smoke`: the whole MSA pipeline on a tiny RANDOM model: no downloads, no torch, under a
minute. A smoke test of every stage; `msa-jax demo` runs the trained model.

1. build a random Qwen3 checkpoint in Hugging Face format (config.json, model.safetensors, byte
   tokenizer); 2. convert it (cast to another dtype); 3. generate from a prompt; 4. upgrade it
   to MSA (router layers); 5. encode a synthetic corpus into a memory bank, save it and load it
   back; 6. ask questions with and without Memory Interleave, printing the documents routed per
   router layer with their scores, the timings and the bytes per memory token of each tier.
Everything is written under the config's output_dir (default outputs/smoke); the checkpoints and
bank there work with the other commands (`msa-jax ask --model=... --bank=...`). The weights are
random, so answers are gibberish (`msa-jax demo` runs the trained model).
"""

from __future__ import annotations

import os
import shutil

from absl import flags

from msa_jax.cli import common, report

NAME = "smoke"
SUMMARY = "the whole pipeline on a tiny random model (no downloads): convert, generate, encode, ask"
USAGE = "[--config=configs/smoke.py] [--config.section.key=VALUE ...]"
SIZE_KEYS = ("vocab_size", "num_layers", "hidden_size", "intermediate_size", "num_heads",
             "num_kv_heads", "head_dim")
RANDOM_NOTE = ("NOTE: the model is RANDOMLY INITIALISED: its text is gibberish and its routing "
               "scores are noise; this run shows the pipeline, the routing output, timings and "
               "memory costs (`msa-jax demo` runs the trained model).")


def default_config_path(name: str = "smoke.py") -> str:
    """configs/NAME of the repository, else of the installed package (common.bundled)."""
    return common.bundled("configs", name)


def define_flags(fv: flags.FlagValues, argv):
    common.define_config_flag(fv, argv, default_config_path(),
                              "default: configs/smoke.py, which documents every key")


def _step(i: int, text: str):
    print(f"\n[{i}/6] {text}", flush=True)


def _checkpoints(c, out: str):
    """Steps 1-2: a random Qwen3 checkpoint and its converted copy.
    Returns (random checkpoint, converted checkpoint, tokenizer)."""
    import msa_jax
    from msa_jax.convert import convert_checkpoint

    cfg = msa_jax.preset(c.model.preset, **{k: c.model[k] for k in SIZE_KEYS})
    cfg, tok = common.attach_byte_tokenizer(cfg)
    if tok is None:
        raise msa_jax.ConfigError(f"model.vocab_size={cfg.vocab_size} is too small for the byte "
                                  "tokenizer (needs >= 263)")
    raw = os.path.join(out, "qwen3-random")
    _step(1, f"random Qwen3 checkpoint (seed {c.seed}) -> {raw}")
    with common.Timer() as t:
        model = msa_jax.MSAModel.random(cfg, seed=c.seed, tokenizer=tok)
        model.save_pretrained(raw, overwrite=True)
    print(f"  {', '.join(sorted(os.listdir(raw)))}  ({t.seconds:.1f} s)")
    for line in report.model_lines(cfg, tokenizer=tok)[:3]:
        print("  " + line)
    cast = os.path.join(out, f"qwen3-random-{c.model.checkpoint_dtype}")
    _step(2, f"convert (validate every tensor, cast to {c.model.checkpoint_dtype}) -> {cast}")
    with common.Timer() as t:
        convert_checkpoint(raw, cast, dtype=c.model.checkpoint_dtype, overwrite=True)
        tok.save(cast)
    sizes = {p: sum(os.path.getsize(os.path.join(p, f)) for f in os.listdir(p)
                    if f.endswith(".safetensors")) for p in (raw, cast)}
    print(f"  weights {report.size(sizes[raw])} -> {report.size(sizes[cast])}  ({t.seconds:.1f} s)")
    return raw, cast, tok


def _generate(c, path: str):
    """Step 3: load the converted checkpoint and continue a prompt."""
    import msa_jax

    g = c.generation
    model = msa_jax.from_pretrained(path, dtype=c.model.dtype,
                                    kernel_implementation=c.model.kernel_implementation)
    _step(3, f"generate ({'greedy' if not g.temperature else f'temperature {g.temperature}'}, "
             f"{g.max_new_tokens} new tokens, compute {model.cfg.dtype})")
    with common.Timer() as t:
        text = model.generate(g.prompt, max_new_tokens=g.max_new_tokens,
                              temperature=g.temperature, top_p=g.top_p, seed=g.seed)
    print(f"  prompt: {g.prompt!r}\n  output: {report.show(text)}  ({t.seconds:.1f} s, JIT "
          "compilation included)")


def _msa_model(c, src: str, out: str, tok):
    """Step 4: upgrade the converted checkpoint to MSA and load it."""
    import msa_jax
    from msa_jax.config import parse_router_layers
    from msa_jax.convert import convert_checkpoint, read_config

    layers = parse_router_layers(c.msa.router_layers, read_config(src).num_layers)
    msa = msa_jax.MSAConfig(router_layers=layers, pooling_size=c.msa.pooling_size,
                            top_k_docs=c.msa.top_k_docs, prefix_token_ids=common.chat_prefix(tok))
    dst = os.path.join(out, "msa-random")
    _step(4, f"upgrade to MSA: router layers {','.join(map(str, layers))}, P={msa.pooling_size}, "
             f"top-{msa.top_k_docs} -> {dst}")
    with common.Timer() as t:
        convert_checkpoint(src, dst, msa=msa, seed=c.seed, overwrite=True)
        tok.save(dst)
        model = msa_jax.from_pretrained(dst, dtype=c.model.dtype,
                                        kernel_implementation=c.model.kernel_implementation)
    print(f"  router projections drawn ~ N(0, {msa.router_init_std}) as the reference does  "
          f"({t.seconds:.1f} s)")
    return dst, model


def _bank(c, model, out: str):
    """Step 5: synthetic corpus -> memory bank -> saved -> loaded back. Returns (bank, queries)."""
    import msa_jax
    from msa_jax.data import make_needle_task, save_corpus, save_queries

    docs, queries = make_needle_task(c.corpus.num_docs, c.ask.num_questions, seed=c.corpus.seed,
                                     facts_per_doc=tuple(c.corpus.facts_per_doc))
    save_corpus(docs, os.path.join(out, "corpus.jsonl"))
    save_queries(queries, os.path.join(out, "queries.jsonl"))
    path, journal = os.path.abspath(os.path.join(out, "bank")), os.path.join(out, "encode-journal")
    _step(5, f"memory bank: {len(docs)} synthetic documents (e.g. {report.show(docs[0].text, 70)})")
    with common.Timer() as t:
        bank = model.encode_memory(docs, block_tokens=c.memory.block_tokens or None,
                                   journal=journal, progress=False, dtype=c.memory.dtype or None,
                                   routing_dtype=common.config_value(
                                       c, "memory.routing_dtype") or None)
    print(f"  encoded in {t.seconds:.1f} s (JIT compilation included)")
    with common.Timer() as t:
        msa_jax.save_bank(bank, path, overwrite=True)
        shutil.rmtree(journal, ignore_errors=True)  # the saved bank supersedes it
        bank = msa_jax.load_bank(path)
    print(f"  saved to {os.path.join(out, 'bank')} and loaded back, checksums verified "
          f"({t.seconds:.1f} s)")
    for line in report.bank_lines(bank):
        print("  " + line)
    return bank, queries


def _modes(setting: str) -> list[bool]:
    modes = {"both": [False, True], "on": [True], "off": [False]}
    if setting not in modes:
        raise common.UsageError(f"--config.ask.interleave_modes={setting!r}: expected both, on "
                                "or off")
    return modes[setting]


# config keys -> the flag (common.BOUNDS) whose rule checks them
_NUMERIC_SETTINGS = {
    "seed": "seed", "model.vocab_size": "vocab_size", "msa.pooling_size": "pooling_size",
    "msa.top_k_docs": "top_k", "memory.block_tokens": "block_tokens",
    "generation.max_new_tokens": "max_new_tokens", "generation.temperature": "temperature",
    "generation.top_p": "top_p", "generation.seed": "seed", "ask.max_rounds": "max_rounds",
    "ask.max_new_tokens": "max_new_tokens", "ask.answer_tokens": "answer_tokens",
}


def _check(c):
    """Fail on a bad setting before any work is done."""
    for key, name in _NUMERIC_SETTINGS.items():
        common.config_setting(c, key, name)
    for key in ("model.dtype", "model.checkpoint_dtype"):
        if common.config_value(c, key) not in common.DTYPES:
            raise common.UsageError(f"--config.{key}={common.config_value(c, key)!r}: expected "
                                    f"one of {', '.join(common.DTYPES)}")
    routing = common.config_value(c, "memory.routing_dtype") or ""
    if routing not in ("",) + common.DTYPES + ("int8",):
        raise common.UsageError(f"--config.memory.routing_dtype={routing!r}: expected \"\" or one "
                                f"of {', '.join(common.DTYPES + ('int8',))}")
    _modes(c.ask.interleave_modes)


def _ask(c, model, bank, queries) -> list[dict]:
    """Step 6: every question, with and / or without Memory Interleave."""
    from msa_jax.data import Query

    a = c.ask
    queries = list(queries) + [Query(f"extra{i}", q) for i, q in enumerate(a.questions)]
    _step(6, f"{len(queries)} questions; routed documents per router layer, best first, "
             "* = the document holding the answer")
    records, recalls = [], []
    for q in queries:
        print(f"\n  Q{q.id}: {q.question}" + (f"  (reference [{', '.join(q.reference_ids)}], "
                                               f"expected {' | '.join(q.answers)})"
                                               if q.reference_ids else ""))
        for interleave in _modes(a.interleave_modes):
            with common.Timer() as t:
                answer = model.ask(q.question, bank, interleave=interleave,
                                   max_rounds=a.max_rounds, max_new_tokens=a.max_new_tokens,
                                   answer_tokens=a.answer_tokens)
            mode = "with" if interleave else "without"
            print(f"    {mode} Memory Interleave ({t.seconds:.1f} s)")
            for line in report.answer_lines(answer, q.reference_ids, indent="      "):
                print(line)
            record = report.answer_record(q.question, answer, q.reference_ids, q.id, t.seconds)
            records.append(dict(record, interleave=interleave))
            if not interleave and "recall" in record:
                recalls.append(report.recall(report.question_routing(answer), q.reference_ids))
    if recalls:
        print()
        for line in report.recall_lines(recalls, model.cfg.msa.top_k_docs):
            print("  " + line + "  (random model: chance level)")
    return records


def execute(fv: flags.FlagValues, config):
    c = config
    _check(c)
    out = c.output_dir
    os.makedirs(out, exist_ok=True)
    print(f"msa-jax smoke -> {out}\n{RANDOM_NOTE}")
    with common.Timer() as total:
        _, cast, tok = _checkpoints(c, out)
        _generate(c, cast)
        msa_dir, model = _msa_model(c, cast, out, tok)
        bank, queries = _bank(c, model, out)
        records = _ask(c, model, bank, queries)
        common.write_json(os.path.join(out, "answers.json"), {"questions": records})
    print(f"\ndone in {total.seconds:.1f} s (most of it JIT compilation; a second run reuses the "
          f"compilation cache). Answers: {os.path.join(out, 'answers.json')}\n"
          "Reminder: the weights are random, so the answers are gibberish.\nNext:\n"
          f"  msa-jax info --model={msa_dir} --bank={os.path.join(out, 'bank')}\n"
          f"  msa-jax ask --model={msa_dir} --bank={os.path.join(out, 'bank')} "
          f"--queries={os.path.join(out, 'queries.jsonl')} --nointerleave")
