"""What checking a bank's tier checksums costs: save a bank with one tier file of about --gib GiB,
then time load_bank (sizes, structure, metadata checksums) and the first read of the routing
tier (its segment checksums), against a plain read of the same file.

    PYTHONPATH=. python benchmarks/memory/checksum_cost.py --gib 1
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from msa_jax.memory.bank import BankSpec, MemoryBank
from msa_jax.memory.store import load_bank, save_bank


def _bank(chunks: int, docs: int) -> MemoryBank:
    spec = BankSpec("bench", 1, 8, 128, 64, "float32")  # 4 KiB per chunk and tier
    bank = MemoryBank(spec, np.zeros((1, 0, 8, 128), np.float32),
                      np.zeros((1, 0, 8, 128), np.float32))
    per = chunks // docs
    block = np.ones(spec.chunk_shape(per * docs), np.float32)  # one append: one allocation
    bank.append([f"d{d}" for d in range(docs)], [[1] * per] * docs, [None] * docs, [per] * docs,
                block, block, block)
    return bank


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=1.0, help="bytes of the routing tier, in GiB")
    p.add_argument("--docs", type=int, default=256)
    a = p.parse_args()
    chunks = int(a.gib * 2**30) // (8 * 128 * 4) // a.docs * a.docs
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        path = save_bank(_bank(chunks, a.docs), os.path.join(tmp, "bank"))
        nbytes = os.path.getsize(os.path.join(path, "routing_keys.bin"))
        t0 = time.perf_counter()
        with open(os.path.join(path, "routing_keys.bin"), "rb") as f:
            while f.read(1 << 24):
                pass
        read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        bank = load_bank(path)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        bank.rows("routing_keys")  # the first read checks the tier's segments
        check_s = time.perf_counter() - t0
    gb = nbytes / 1e9
    print(f"routing tier {gb:.2f} GB: plain read {read_s:.2f} s ({gb / read_s:.2f} GB/s); "
          f"load_bank {load_s:.3f} s; first read with checksums {check_s:.2f} s "
          f"({gb / check_s:.2f} GB/s, {check_s / gb:.2f} s per GB)")


if __name__ == "__main__":
    main()
