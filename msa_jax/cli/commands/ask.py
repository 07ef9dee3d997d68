"""Ask questions of a memory bank; print the answers and the documents routed per router layer.

One question with --question, or a query file with --queries (.json list or .jsonl of {"query",
"reference_list", "answer"} records, the reference's format). With Memory Interleave (the
default) the model names document ids, their text is injected and the question re-routed, for up
to --max_rounds rounds, then it answers; with --nointerleave it answers after one routed pass.
With --constrain_ids a round may only name a document it routed (or end retrieval).
For every round the top-k documents of every router layer are printed with their scores, reference
documents marked *. When the queries carry reference_list, routing recall@k is printed: the
share of reference documents among those routed for the question; reference ids the bank does not
hold are named in a warning and left out (a query left with none is not counted). --json_out saves
it all.
"""

from __future__ import annotations

import sys

from absl import flags

from msa_jax.cli import common, report
from msa_jax.errors import InputError

NAME = "ask"
SUMMARY = "answer questions from a memory bank, printing routed documents per router layer"
USAGE = ("--model=DIR --bank=BANK_DIR (--question=TEXT | --queries=FILE) [--nointerleave] "
         "[--constrain_ids] [--max_rounds=4] [--max_new_tokens=64] [--answer_tokens=128] "
         "[--top_k=N] [--json_out=FILE] [--config=FILE]")


def define_flags(fv: flags.FlagValues, argv):
    common.define_model_flag(fv, help_text="MSA checkpoint folder the bank was encoded with.")
    flags.DEFINE_string("bank", None, "Memory bank folder (from `msa-jax encode`).",
                        flag_values=fv)
    flags.mark_flag_as_required("bank", flag_values=fv)
    flags.DEFINE_string("question", None, "One question.", flag_values=fv)
    flags.DEFINE_string("queries", None, "Query file (.json / .jsonl; reference_list optional).",
                        flag_values=fv)
    flags.mark_flags_as_mutual_exclusive(["question", "queries"], required=True, flag_values=fv)
    flags.DEFINE_boolean("interleave", True, "Use Memory Interleave (--nointerleave: one routed "
                         "pass, then the answer).", flag_values=fv)
    flags.DEFINE_boolean("constrain_ids", False, "Let each Memory Interleave round name only "
                         "a document that round routed (or end retrieval): decoding masked to "
                         "those responses. Default: free decoding, as the reference.",
                         flag_values=fv)
    common.define_bounded(fv, "max_rounds", 4, "Memory Interleave rounds at most.")
    common.define_sampling_flags(fv, max_new_tokens=64)
    fv["max_new_tokens"].help = "Tokens generated per Memory Interleave round at most."
    common.define_bounded(fv, "answer_tokens", 128, "Tokens of the answer at most.")
    common.define_bounded(fv, "top_k", None, "Documents routed per router layer (default: the "
                          "checkpoint's top_k_docs).")
    flags.DEFINE_string("json_out", None, "Write answers, rounds, routing and recall here (JSON).",
                        flag_values=fv)
    common.define_dtype_flag(fv, "Compute dtype (default: the checkpoint's).")
    common.define_config_flag(fv, argv, None, "optional inference settings, e.g. configs/msa_4b.py")


def _questions(fv: flags.FlagValues):
    from msa_jax.data import Query, load_queries

    if fv.question is not None:
        if not fv.question.strip():
            raise common.UsageError("--question is empty")
        return [Query("0", fv.question)]
    return load_queries(fv.queries)


def _references_in(queries, bank, where: str):
    """The queries with only the reference ids the bank holds; the others are named in a warning
    (a recall over documents the bank lacks would read as a real 0.00)."""
    from msa_jax.data import missing_references, without_references

    missing = missing_references(queries, bank.doc_ids)
    if not missing:
        return queries
    count = sum(map(len, missing.values()))
    named = "; ".join(f"query {q!r}: {', '.join(map(repr, ids[:5]))}"
                      + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
                      for q, ids in list(missing.items())[:5])
    more = f"; and {len(missing) - 5} more queries" if len(missing) > 5 else ""
    print(f"msa-jax ask: warning: {count} reference id(s) of {len(missing)} query(ies) are not in "
          f"the bank {where}, and are left out of the recall: {named}{more}", file=sys.stderr)
    return without_references(queries, missing)


def execute(fv: flags.FlagValues, config):
    queries = _questions(fv)
    interleave = common.setting(fv, "interleave", config, "ask.interleave")
    kwargs = dict(
        interleave=interleave,
        constrain_ids=common.setting(fv, "constrain_ids", config, "ask.constrain_ids"),
        max_rounds=common.setting(fv, "max_rounds", config, "ask.max_rounds"),
        max_new_tokens=common.setting(fv, "max_new_tokens", config, "ask.max_new_tokens"),
        answer_tokens=common.setting(fv, "answer_tokens", config, "ask.answer_tokens"),
        temperature=common.setting(fv, "temperature", config, "generation.temperature"),
        top_p=common.setting(fv, "top_p", config, "generation.top_p"),
        seed=common.setting(fv, "seed", config, "generation.seed"))
    model = common.load_model(
        fv.model, dtype=common.setting(fv, "dtype", config, "model.dtype"),
        kernel_implementation=common.config_value(config, "model.kernel_implementation"),
        top_k=common.setting(fv, "top_k", config, "msa.top_k_docs"))
    model.require_msa("read a memory bank")
    if model.tokenizer is None:
        raise InputError(f"{fv.model} has no tokenizer: `ask` needs one for text questions")
    bank = common.load_bank(fv.bank)
    queries = _references_in(queries, bank, fv.bank)
    mode = "with Memory Interleave" if interleave else "without Memory Interleave"
    print(f"{len(queries)} question(s), {mode}; bank {bank.num_docs} documents; top-"
          f"{model.cfg.msa.top_k_docs} per router layer; * = reference document", flush=True)
    records, recalls = [], []
    for q in queries:
        with common.Timer() as t:
            answer = model.ask(q.question, bank, **kwargs)
        print(f"\nQ{q.id}: {q.question}  ({t.seconds:.1f} s)")
        if q.answers:
            print(f"  expected: {' | '.join(q.answers)}")
        for line in report.answer_lines(answer, q.reference_ids):
            print(line)
        records.append(report.answer_record(q.question, answer, q.reference_ids, q.id, t.seconds))
        rec = report.recall(report.question_routing(answer), q.reference_ids)
        if rec is not None:
            recalls.append(rec)
        sys.stdout.flush()
    if recalls:
        print()
        for line in report.recall_lines(recalls, model.cfg.msa.top_k_docs):
            print(line)
    if fv.json_out:
        common.write_json(fv.json_out, {"model": fv.model, "bank": fv.bank,
                                        "interleave": interleave, "questions": records})
        print(f"wrote {fv.json_out}")
