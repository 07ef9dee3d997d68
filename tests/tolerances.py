"""Tolerances shared by tests that compare two *different* float32 computations of the same math
(another packing, block size, device count or compiler setting): see docs/architecture.md,
"What is bit-exact". Data movement (delete, re-add, compact, save/load) is compared bit-exactly.
"""

# float32, same math, another summation order: observed differences are ~1e-7 (a few ulp of
# values of order 1); 1e-5 leaves a wide margin while still catching a wrong token or chunk.
F32_REASSOC = dict(atol=1e-5, rtol=1e-5)
