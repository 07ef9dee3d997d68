"""One set of rules for padded sizes (kernels_pallas/common.py: cdiv, round_up, next_pow2,
prev_pow2, geometric_size), checked against direct oracles, and no other module rounding by hand."""

import pathlib
import re

import jax.numpy as jnp
import numpy as np

import kernels_pallas
from kernels_pallas.common import cdiv, geometric_size, next_pow2, prev_pow2, round_up

ROOT = pathlib.Path(kernels_pallas.__file__).resolve().parents[1]
COMMON = ROOT / "kernels_pallas" / "common.py"
HAND_ROUNDING = re.compile(r"-\(-|bit_length\(|math\.ceil\(math\.log2")


def test_no_module_rounds_by_hand():
    found = []
    for pkg in ("msa_jax", "kernels_pallas"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path == COMMON:
                continue
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]
                if HAND_ROUNDING.search(code):
                    found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not found, "round with kernels_pallas.common instead:\n" + "\n".join(found)


def test_cdiv_and_round_up():
    for n in range(0, 300):
        for d in (1, 3, 8, 64):
            assert cdiv(n, d) == int(np.ceil(n / d))
            assert round_up(n, d) == d * int(np.ceil(n / d))
    arr = jnp.arange(20)
    np.testing.assert_array_equal(np.asarray(cdiv(arr, 8)), np.ceil(np.arange(20) / 8))


def test_next_pow2():
    powers = [2 ** e for e in range(20)]
    for n in range(0, 5000):
        for minimum in (1, 8, 16):
            want = max(minimum, min(p for p in powers if p >= n))
            assert next_pow2(n, minimum) == want, (n, minimum)


def test_prev_pow2():
    powers = [2 ** e for e in range(20)]
    for n in range(1, 5000):
        assert prev_pow2(n) == max(p for p in powers if p <= n), n


def _geometric_oracle(n: int, minimum: int) -> int:
    """The smallest size >= max(n, minimum) among: every size below 8, and 2**e * (8 + j) / 8
    for e >= 3, j = 0..7."""
    sizes = set(range(1, 8)) | {(2 ** e) * (8 + j) // 8 for e in range(3, 24) for j in range(8)}
    return min(s for s in sizes if s >= max(n, minimum))


def test_geometric_size():
    for minimum in (1, 64, 256, 1024):
        for n in list(range(0, 3000)) + [10 ** 5, 10 ** 6 + 1]:
            got = geometric_size(n, minimum)
            assert got == _geometric_oracle(n, minimum), (n, minimum)
            assert got <= max(n, minimum) * 1.125
