"""Teacher-forced accuracy of a training checkpoint on held-out samples (a diagnostic of the
reader: does the model write the right `[id]` response / answer when every earlier token is
given?), and whether the positive is among the top-2 routed of the sample's documents.

    python benchmarks/teacher_forced.py --workdir=runs/demo [--config=configs/train_demo.py]
    python benchmarks/teacher_forced.py --workdir=runs/demo --docs_per_sample=1 --hops=1
    python benchmarks/teacher_forced.py --workdir=runs/demo-teacher \
        --config=configs/train_demo_teacher.py --read=target     # or --read=routed --top_k=1

The latest checkpoint of --workdir, read through a copy (the trainer of a work directory drops
its metrics past the checkpoint it resumes from); --config must describe the checkpoint's model.
Samples: `--questions` held-out questions per chain length (msa_jax.training.tasks, split
"eval": persons never seen in training), one sample per retrieval step plus the answer step, as
the recipe trains them, over --docs_per_sample documents each (default: the recipe's).

Printed per kind of sample ([id] response, answer step):
- exact: every labelled token right (argmax, teacher-forced);
- token accuracy: the share of labelled tokens right, the response's fixed tokens excluded
  (for `[id]` responses: the id's digits; for answer steps: the answer's tokens);
- choose: (`[id]` responses, --choose) the share of samples where the right document's id is
  the likeliest response among the ids of the sample's documents: what decoding constrained to
  the ids in memory could reach (chance = 1 / documents);
- routed: a positive among the top 2 of the last router layer.

--read=routed (default) reads the router's top-k of the sample's documents (--top_k, default
the model's top_k_docs), as inference does; --read=target reads the step's right documents
(`OptimConfig.read="target"`: what a reader trained that way saw).
"""

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from msa_jax.cli.commands.train import build  # noqa: E402
from msa_jax.data.synthetic import FACTS_PER_DOC  # noqa: E402
from msa_jax.model.decode import logits_of  # noqa: E402
from msa_jax.model.train_forward import TrainBatch, train_forward  # noqa: E402
from msa_jax.training import pipeline, tasks  # noqa: E402
from msa_jax.training.packing import BATCH_FIELDS  # noqa: E402
from msa_jax.training.samples import retrieval_target  # noqa: E402
from msa_jax.utils import load_python_file  # noqa: E402


def held_out(config, n: int, hops=(1, 2), docs_per_sample: int = 0, facts_per_doc=None):
    """Held-out samples laid out as the recipe trains them (its documents per sample, facts per
    document unless `facts_per_doc` is given, answer steps with or without routing labels)."""
    d = config.data
    docs = docs_per_sample or d.docs_per_sample
    facts = tuple(facts_per_doc or d.get("facts_per_doc", FACTS_PER_DOC))
    out = []
    for h in hops:
        out += tasks.make_retrieval_samples(n, hops=h, docs_per_sample=docs,
                                            hard_negatives=d.hard_negatives if docs > h else 0,
                                            split="eval", seed=77 + h, with_answer=True,
                                            id_digits=d.get("id_digits", 0),
                                            facts_per_doc=facts,
                                            answer_routing=d.get("answer_routing", True))
    return out


def kind(sample) -> str:
    return "answer step" if sample.id.endswith("answer") else "[id] response"


def _variable(tok, sample, labelled: np.ndarray) -> np.ndarray:
    """Which labelled tokens carry the sample's own content (id digits, answer tokens)."""
    fixed = tok.encode(retrieval_target(("",)), allow_special=True)  # "[]" + the round end
    if kind(sample) == "[id] response":
        keep = np.ones(len(labelled), bool)
        keep[:1] = keep[len(labelled) - len(fixed) + 1:] = False
        return keep
    answer = tok.encode(" " + sample.answer)  # after "...is:", as packed
    keep = np.zeros(len(labelled), bool)
    keep[len(labelled) - len(answer) - 1:len(labelled) - 1] = True  # before <|im_end|>
    return keep


def score(forward, params, samples, tok, cfg, pcfg):
    """Per sample: (labelled log-likelihood, exact, token hits, tokens, positive routed top 2)."""
    out, i = [], 0
    for batch in pipeline.eval_batches(samples, tok, cfg, pcfg):
        m = int(batch["num_docs"])
        tb = TrainBatch(**{k: jnp.asarray(batch[k]) for k in BATCH_FIELDS if k != "num_docs"})
        logp, scores = forward(params, tb, jnp.zeros(m))
        logp, labels = np.asarray(logp), batch["labels"]
        for row in range(labels.shape[0]):
            if i >= len(samples):
                break
            s, i = samples[i], i + 1
            pos = np.nonzero(labels[row, 1:] != -100)[0]  # the LM loss shifts by one
            want = labels[row, 1:][pos]
            hit = logp[row, pos].argmax(-1) == want
            var = _variable(tok, s, want)
            relevant = set(np.nonzero(batch["doc_labels"][row][:m])[0].tolist())
            top2 = set(np.argsort(-np.asarray(scores[row, 1:m + 1]))[:2].tolist())
            out.append((float(logp[row, pos, want].sum()), bool(hit.all()),
                        int(hit[var].sum()), int(var.sum()), bool(relevant & top2)))
    return out


def choose(forward, params, samples, tok, cfg, pcfg) -> list[bool]:
    """Per `[id]` sample: is its own id the likeliest response among its documents' ids?"""
    variants = [dataclasses.replace(s, target=retrieval_target((d.id,)))
                for s in samples for d in s.documents]
    ll = [r[0] for r in score(forward, params, variants, tok, cfg, pcfg)]
    out, k = [], 0
    for s in samples:
        n = len(s.documents)
        out.append(s.documents[int(np.argmax(ll[k:k + n]))].id == s.relevant_ids[-1])
        k += n
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--config", default="configs/train_demo.py",
                   help="the recipe of the checkpoint: FILE or FILE:ARG, as msa-jax train takes it")
    p.add_argument("--questions", type=int, default=32, help="per chain length")
    p.add_argument("--hops", default="1,2", help="chain lengths, comma-separated")
    p.add_argument("--docs_per_sample", type=int, default=0, help="0 = the recipe's")
    p.add_argument("--facts_per_doc", default="",
                   help="LOW,HIGH facts per document; empty = the recipe's data.facts_per_doc")
    p.add_argument("--read", choices=("routed", "target"), default="routed",
                   help="the documents the LM path reads (see above)")
    p.add_argument("--top_k", type=int, default=0, help="routed documents read; 0 = the model's")
    p.add_argument("--shared_selection", action="store_true",
                   help="--read=routed: every router layer reads the first one's documents")
    p.add_argument("--choose", action="store_true",
                   help="also rank every document's id by likelihood (x documents forwards)")
    args = p.parse_args()
    file, *arg = args.config.split(":", 1)
    config = load_python_file(file).get_config(*arg)
    config.eval.every = 0
    config.data.num_queries = 8  # the trainer's own samples are not used
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(os.path.join(args.workdir, "checkpoints"), os.path.join(tmp, "checkpoints"))
        trainer = build(config, tmp, show_progress=False)
        cfg, params, tok = trainer.cfg, trainer.state.params, trainer.tokenizer
        if args.top_k:
            cfg = cfg.replace(msa=dataclasses.replace(cfg.msa, top_k_docs=args.top_k))
        if args.shared_selection:
            cfg = cfg.replace(msa=dataclasses.replace(cfg.msa, shared_selection=True))
        print(f"step {trainer.step}")
        facts = tuple(map(int, args.facts_per_doc.split(","))) if args.facts_per_doc else None
        samples = held_out(config, args.questions, tuple(map(int, args.hops.split(","))),
                           args.docs_per_sample, facts)
        pcfg = pipeline.PipelineConfig(batch_size=16, length_buckets=config.data.length_buckets,
                                       doc_buckets=config.data.doc_buckets)

        @jax.jit
        def forward(params, batch, num_docs_like):
            out = train_forward(cfg, params, batch, num_docs_like.shape[0],
                                read_target=args.read == "target")
            return jax.nn.log_softmax(logits_of(cfg, params, out.hidden), -1), \
                out.doc_scores[-1]

        results = score(forward, params, samples, tok, cfg, pcfg)
        ids = [s for s in samples if kind(s) == "[id] response"]
        chosen = choose(forward, params, ids, tok, cfg, pcfg) if args.choose else None
        trainer.close()
    for name in ("[id] response", "answer step"):
        v = np.asarray([r for s, r in zip(samples, results) if kind(s) == name], float)
        if not len(v):
            continue
        line = (f"{name:>14}: {len(v)} samples, exact {v[:, 1].mean():.3f}, token accuracy "
                f"{v[:, 2].sum() / max(v[:, 3].sum(), 1):.3f}")
        if name == "[id] response" and chosen is not None:
            line += (f", choose {np.mean(chosen):.3f} (chance "
                     f"{np.mean([1 / len(s.documents) for s in ids]):.3f})")
        print(line + f", routed {v[:, 4].mean():.3f}")


if __name__ == "__main__":
    main()
