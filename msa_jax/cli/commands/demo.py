"""`msa-jax demo`: the bundled trained tiny MSA model answering held-out questions from a memory.

    msa-jax demo                                              # 1M-token memory, 12 questions
    msa-jax demo --config.memory_tokens=10_000_000            # grow the memory
    msa-jax demo --config.ask.questions="('What is the lucky boat of Lena K. Sato?',)"
    msa-jax demo --config.model=DIR --config.corpus=docs.jsonl --config.queries=queries.jsonl

Steps: 1. load the model (default: the bundled models/msa-tiny-demo, trained here from scratch
with configs/train_demo.py; its model card says what it can and cannot do); 2. build the memory:
the evaluation set's needle documents (msa_jax.eval.evalset: held-out persons, never seen in
training) among synthetic distractors naming training persons only, grown to `memory_tokens`
(or your own corpus), encoded with a progress bar; 3. answer the held-out questions through
Memory Interleave, printing per question the ids the model wrote and the documents routed per
round, the answer and the time; 4. report document-id and answer exact match (single-hop and
two-hop apart). Writes output_dir/answers.json. `msa-jax smoke` runs every stage on a random
model instead (the pipeline smoke test).
"""

from __future__ import annotations

import os

from absl import flags

from msa_jax.cli import common, report

NAME = "demo"
SUMMARY = "the bundled trained tiny MSA model answering held-out questions from a 1M-token memory"
USES_CPU_CORES = True  # one JAX CPU device per core: encoding uses them all
USAGE = "[--config=configs/demo.py] [--config.section.key=VALUE ...]"
BUNDLED_MODEL = "msa-tiny-demo"


def bundled_model_path() -> str:
    """models/msa-tiny-demo of the repository, else of the installed package (common.bundled)."""
    return common.bundled("models", BUNDLED_MODEL)


def define_flags(fv: flags.FlagValues, argv):
    from msa_jax.cli.commands.smoke import default_config_path

    common.define_config_flag(fv, argv, default_config_path("demo.py"),
                              "default: configs/demo.py, which documents every key")


def _questions(c):
    """(EvalItems or Queries to ask, needle documents): the evaluation set's first questions,
    or the config's query file; plus the config's own questions (no reference)."""
    from msa_jax.data import Query, load_queries
    from msa_jax.eval.evalset import build_eval_suite

    own = [Query(f"own{i}", q) for i, q in enumerate(c.ask.questions)]
    if c.queries:
        return list(load_queries(c.queries)) + own, []
    suite = build_eval_suite()
    one = [it for it in suite.items if it.hops == 1][:c.single_hop]
    two = [it for it in suite.items if it.hops == 2][:c.two_hop]
    return one + two + own, list(suite.documents)


def _corpus(c, needles, tok):
    """The memory's documents: the config's corpus file, else the needles among `haystack`
    distractors grown to memory_tokens tokens of `tok`."""
    from msa_jax.data import load_corpus
    from msa_jax.eval.evalset import memory_documents

    if c.corpus:
        return list(load_corpus(c.corpus))
    return memory_documents(c.haystack, c.memory_tokens, needles,
                            lambda text: len(tok.encode(text)), seed=c.seed)


def _ask_all(c, model, bank, questions) -> list[dict]:
    from msa_jax.eval.score import score_answer

    a, records = c.ask, []
    for n, q in enumerate(questions, 1):
        reference = tuple(getattr(q, "relevant_ids", getattr(q, "reference_ids", ())))
        expected = getattr(q, "answer", None) or " | ".join(getattr(q, "answers", ()))
        hops = getattr(q, "hops", None)
        print(f"\n  [{n}/{len(questions)}] {q.question}" + (
            f"  ({hops}-hop; documents [{', '.join(reference)}], expected {expected!r})"
            if reference else ""), flush=True)
        with common.Timer() as t:
            answer = model.ask(q.question, bank, interleave=a.interleave, max_rounds=a.max_rounds,
                               max_new_tokens=a.max_new_tokens, answer_tokens=a.answer_tokens,
                               constrain_ids=a.constrain_ids)
        for line in report.answer_lines(answer, reference, indent="    "):
            print(line)
        record = dict(report.answer_record(q.question, answer, reference, q.id, t.seconds),
                      hops=hops, expected=expected)
        if hasattr(q, "hops"):
            record.update(score_answer(q, answer))
            print(f"    ids {'right' if record['doc_id_match'] else 'WRONG'}, answer "
                  f"{'right' if record['answer_match'] else 'WRONG'}  ({t.seconds:.2f} s)")
        else:
            print(f"    ({t.seconds:.2f} s)")
        records.append(record)
    return records


def _summary(records: list[dict]) -> list[str]:
    lines = []
    for name, group in (("all", [r for r in records if "answer_match" in r]),
                        ("single-hop", [r for r in records if r.get("hops") == 1]),
                        ("two-hop", [r for r in records if r.get("hops") == 2])):
        if group:
            ids = int(sum(r["doc_id_match"] for r in group))
            ok = int(sum(r["answer_match"] for r in group))
            routed = [r["recall"]["union"] for r in group if "recall" in r]
            lines.append(f"{name:>10}: answer exact match {ok}/{len(group)} "
                         f"({100 * ok / len(group):.0f}%), document ids {ids}/{len(group)}"
                         + (f", router recall {sum(routed) / len(routed):.2f}" if routed else ""))
    if lines:
        lines.append("(router recall: the share of a question's documents among those its "
                     "first round routed, any router layer)")
    return lines


def _check(c):
    for key, name in (("memory_tokens", "memory_tokens"), ("ask.max_rounds", "max_rounds"),
                      ("ask.max_new_tokens", "max_new_tokens"),
                      ("ask.answer_tokens", "answer_tokens"), ("seed", "seed")):
        common.config_setting(c, key, name)
    if c.ask.top_k:
        common.config_setting(c, "ask.top_k", "top_k")
    if c.single_hop < 0 or c.two_hop < 0:
        raise common.UsageError("--config.single_hop and --config.two_hop must be >= 0")
    from msa_jax.eval.evalset import HAYSTACKS

    if not c.corpus and c.haystack not in HAYSTACKS:
        raise common.UsageError(f"--config.haystack={c.haystack!r}: expected one of "
                                f"{', '.join(HAYSTACKS)}")


def execute(fv: flags.FlagValues, config):
    c = config
    _check(c)
    os.makedirs(c.output_dir, exist_ok=True)
    path = c.model or bundled_model_path()
    with common.Timer() as total:
        print(f"[1/4] model {path}", flush=True)
        model = common.load_model(path, kernel_implementation=c.kernel_implementation,
                                  top_k=c.ask.top_k or None)
        for line in report.model_lines(model.cfg, tokenizer=model.tokenizer)[:3]:
            print("  " + line)
        questions, needles = _questions(c)
        with common.Timer() as t:
            docs = _corpus(c, needles, model.tokenizer)
        what = c.corpus or (f"{len(needles)} needles among {c.haystack} distractors "
                            f"(persons of the training split only)")
        print(f"\n[2/4] memory: {len(docs):,} documents, {what} ({t.seconds:.1f} s)", flush=True)
        with common.Timer() as t:
            bank = model.encode_memory(docs, block_tokens=c.memory.block_tokens or None,
                                       progress=True, dtype=c.memory.dtype or None,
                                       routing_dtype=c.memory.routing_dtype or None,
                                       devices="local")
        print(f"  encoded {bank.num_tokens:,} tokens in {t.seconds:.1f} s "
              f"({bank.num_tokens / max(t.seconds, 1e-9):,.0f} tokens/s, JIT included)")
        for line in report.bank_lines(bank):
            print("  " + line)
        mode = "without Memory Interleave" if not c.ask.interleave else (
            "with Memory Interleave, ids constrained to the routed documents"
            if c.ask.constrain_ids else "with Memory Interleave, ids decoded freely")
        print(f"\n[3/4] {len(questions)} questions, {mode}; routed documents per round and "
              "router layer, best first, * = a relevant document", flush=True)
        records = _ask_all(c, model, bank, questions)
        print("\n[4/4] accuracy")
        for line in _summary(records):
            print("  " + line)
        common.write_json(os.path.join(c.output_dir, "answers.json"),
                          {"model": path, "memory_tokens": bank.num_tokens,
                           "questions": records})
    print(f"\ndone in {total.seconds:.1f} s. Answers: "
          f"{os.path.join(c.output_dir, 'answers.json')}")
