"""Unit routing keys for a bank's device view (`MemoryBank.view(unit_keys=True)`).

Cosine routing scores q / |q| against k / max(|k|, eps) for every pooled routing key k, per KV
head (kernels_pallas/routing). Done in the scan, that normalisation runs over the whole tier on
every question, and on XLA:CPU it costs ~10x the dot products themselves (a normalised copy of
each tile is written and re-read). Done once, when the view is built, the scan is a plain dot
product that streams the tier once. The encoder already stores unit keys for cosine models;
normalising again here costs one pass at view time and makes the view right whatever was
appended (`MemoryBank.append` takes any float rows).

- `unit_rows`: float rows -> unit rows, per head;
- `unit_scales`: an int8 tier's scales -> the scales whose dequantised heads are unit vectors
  (a positive per-head scale cancels in the normalisation, so this is exact up to rounding).

Both work in blocks of rows: no float copy of the whole tier. A leaf: NumPy only.
"""

from __future__ import annotations

import numpy as np

from msa_jax.memory.quantize import dequantize_int8

BLOCK_ROWS = 1 << 18


def _norms(x: np.ndarray, eps: float) -> np.ndarray:
    return np.maximum(np.sqrt(np.einsum("...h,...h->...", x, x)), eps)


def unit_rows(x: np.ndarray, out: np.ndarray, eps: float):
    """out[i] = x[i] / max(|x[i]|, eps) over the last axis, x [C, ..., H] float, in place in
    `out` (same shape; float32 or float64: the division runs in out's dtype)."""
    for i in range(0, len(x), BLOCK_ROWS):
        block = np.asarray(x[i:i + BLOCK_ROWS], out.dtype)
        out[i:i + BLOCK_ROWS] = block / _norms(block, eps)[..., None]


def unit_scales(q: np.ndarray, scale: np.ndarray, out: np.ndarray, eps: float):
    """out = scale / max(|q * scale|, eps): q [C, ..., H] int8, scale and out [C, ...] float32;
    q * out is then the unit vector cosine scoring would compute from q * scale."""
    for i in range(0, len(q), BLOCK_ROWS):
        s = np.asarray(scale[i:i + BLOCK_ROWS], np.float32)
        out[i:i + BLOCK_ROWS] = s / _norms(dequantize_int8(q[i:i + BLOCK_ROWS], s), eps)
