"""metrics.jsonl records without the wall-clock fields (for bit-exact comparisons)."""

import os

from msa_jax.training.metrics import read_jsonl

TIMING = ("tokens_per_s",)


def comparable_records(workdir: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING}
            for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))]
