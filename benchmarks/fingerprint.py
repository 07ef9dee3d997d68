"""Cost of the model fingerprint (msa_jax.memory.fingerprint): throughput of the on-device digest
on one large weight-like array, extrapolated to the weights MSA-4B's fingerprint hashes.

    python benchmarks/fingerprint.py [--elements 268435456] [--dtype bfloat16] [--repeats 3]

Prints the best of `--repeats` timed runs (after one compiling run) and the extrapolation; the
digest reads each value once, so the cost is linear in the number of hashed values.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import msa_jax
from msa_jax.memory import fingerprint
from msa_jax.model.params import abstract_params


def hashed_values(cfg: msa_jax.ModelConfig) -> int:
    params = abstract_params(cfg)
    return sum(x.size for _, x in fingerprint._hashed_leaves(params))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--elements", type=int, default=1 << 28)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    x = jax.random.normal(jax.random.key(0), (args.elements,), jnp.float32).astype(args.dtype)
    fingerprint._digest_jit(x).block_until_ready()
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        fingerprint._digest_jit(x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    rate = args.elements / best
    total = hashed_values(msa_jax.preset("msa-4b"))
    print(f"{jax.devices()[0].platform}: {args.elements:,} {args.dtype} values in {best:.3f} s "
          f"= {rate / 1e9:.3f} G values/s")
    print(f"MSA-4B: {total:,} hashed values -> {total / rate:.1f} s (extrapolated)")


if __name__ == "__main__":
    main()
