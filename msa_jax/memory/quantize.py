"""The int8 routing tier: symmetric quantisation, one float32 scale per (chunk, router layer,
KV head).

    scale = max_h |x[h]| / 127,  q[h] = round(x[h] / scale) in [-127, 127],  x ≈ q * scale

Why per KV head and not per chunk: the heads of one pooled chunk have different norms, and a
shared scale would leave a small head only a few of the 255 levels; per head, every head's
rounding error is at most scale / 2 = max|x_head| / 254. The cost is one float32 per head
(4 / H of the int8 tier: 3 % at H = 128). Under cosine scoring a positive per-head scale cancels
in the normalisation, so only the rounding of each head's direction changes the scores.
The scan dequantises tile by tile (kernels_pallas/routing: q * scale, one float32 product per
value), so a tier is never copied to float.
"""

from __future__ import annotations

import numpy as np

INT8_MAX = 127


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [..., H] float -> (q [..., H] int8, scale [...] float32); an all-zero row gets scale 0."""
    x = np.asarray(x, np.float32)
    scale = (np.max(np.abs(x), axis=-1) / np.float32(INT8_MAX)).astype(np.float32)  # [...]
    safe = np.where(scale > 0, scale, np.float32(1))[..., None]
    q = np.clip(np.rint(x / safe), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """q [..., H] int8, scale [...] float32 -> [..., H] float32 (what the routing scan reads)."""
    return q.astype(np.float32) * np.asarray(scale, np.float32)[..., None]
