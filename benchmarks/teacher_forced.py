"""Teacher-forced accuracy of a training checkpoint on held-out samples (a diagnostic of the
reader: does the model write the right `[id]` response / answer when every earlier token is
given?), and whether the positive is among the top-2 routed of the sample's documents.

    python benchmarks/teacher_forced.py --workdir=runs/demo [--config=configs/train_demo.py]

The latest checkpoint of --workdir, read through a copy (the trainer of a work directory drops
its metrics past the checkpoint it resumes from). Samples: `--questions` held-out single-hop and
two-hop questions (msa_jax.training.tasks, split "eval": persons never seen in training), one
sample per retrieval step plus the answer step, as the recipe trains them.
"""

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from msa_jax.cli.commands.train import build  # noqa: E402
from msa_jax.model.decode import logits_of  # noqa: E402
from msa_jax.model.train_forward import TrainBatch, train_forward  # noqa: E402
from msa_jax.training import pipeline, tasks  # noqa: E402
from msa_jax.training.packing import BATCH_FIELDS  # noqa: E402
from msa_jax.utils import load_python_file  # noqa: E402


def held_out(config, n: int):
    d = config.data
    out = []
    for h in (1, 2):
        out += tasks.make_retrieval_samples(n, hops=h, docs_per_sample=d.docs_per_sample,
                                            hard_negatives=d.hard_negatives, split="eval",
                                            seed=77 + h, with_answer=True,
                                            id_digits=d.get("id_digits", 0))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--config", default="configs/train_demo.py")
    p.add_argument("--questions", type=int, default=32, help="per chain length")
    args = p.parse_args()
    config = load_python_file(args.config).get_config()
    config.eval.every = 0
    config.data.num_queries = 8  # the trainer's own samples are not used
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(os.path.join(args.workdir, "checkpoints"), os.path.join(tmp, "checkpoints"))
        trainer = build(config, tmp, show_progress=False)
        cfg, params, tok = trainer.cfg, trainer.state.params, trainer.tokenizer
        print(f"step {trainer.step}")
        samples = held_out(config, args.questions)
        pcfg = pipeline.PipelineConfig(batch_size=16, length_buckets=config.data.length_buckets,
                                       doc_buckets=config.data.doc_buckets)

        @jax.jit
        def forward(params, batch, num_docs_like):
            out = train_forward(cfg, params, batch, num_docs_like.shape[0])
            return logits_of(cfg, params, out.hidden), out.doc_scores[-1]

        results, i = {}, 0
        for batch in pipeline.eval_batches(samples, tok, cfg, pcfg):
            m = int(batch["num_docs"])
            tb = TrainBatch(**{k: jnp.asarray(batch[k]) for k in BATCH_FIELDS if k != "num_docs"})
            logits, scores = forward(params, tb, jnp.zeros(m))
            pred, labels = np.asarray(jnp.argmax(logits, -1)), batch["labels"]
            for row in range(labels.shape[0]):
                if i >= len(samples):
                    break
                s, i = samples[i], i + 1
                pos = np.nonzero(labels[row, 1:] != -100)[0]  # the LM loss shifts by one
                exact = bool(np.all(pred[row, pos] == labels[row, 1:][pos]))
                relevant = set(np.nonzero(batch["doc_labels"][row][:m])[0].tolist())
                top2 = set(np.argsort(-np.asarray(scores[row, 1:m + 1]))[:2].tolist())
                kind = "answer step" if s.id.endswith("answer") else "[id] response"
                results.setdefault(kind, []).append((exact, bool(relevant & top2)))
        trainer.close()
    for kind, v in sorted(results.items()):
        v = np.asarray(v)
        print(f"{kind:>14}: {len(v)} samples, teacher-forced exact {v[:, 0].mean():.3f}, "
              f"a positive in the top 2 of the last router layer {v[:, 1].mean():.3f}")


if __name__ == "__main__":
    main()
