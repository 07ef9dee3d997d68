"""Helpers shared by every op: backend choice, Triton compiler params, the accumulation dtype,
padding, validation, the tolerance table used by the tests, and CUDA lowering without a GPU
(jax.export)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

# Time of an empty/masked key slot: never visible (SPEC: int32 max).
INVALID_TIME = int(np.iinfo(np.int32).max)
# Time given to padded query rows: sees no real key.
NEVER_TIME = int(np.iinfo(np.int32).min)
IMPLEMENTATIONS = ("xla", "pallas", "auto")

# Absolute and relative tolerance of a forward output against the XLA reference, per input dtype.
# Gradients get GRAD_TOLERANCE_FACTOR times as much. One table, used by every test.
TOLERANCES = {jnp.dtype(jnp.float32): 1e-5, jnp.dtype(jnp.bfloat16): 1e-2}
GRAD_TOLERANCE_FACTOR = 2.0


def tolerance(dtype, grad: bool = False) -> float:
    """Forward (or gradient, `grad=True`) tolerance for inputs of `dtype`."""
    tol = TOLERANCES[jnp.dtype(dtype)]
    return tol * GRAD_TOLERANCE_FACTOR if grad else tol


def accum_dtype(dtype) -> jnp.dtype:
    """The dtype statistics, accumulators, scores and losses are computed in for inputs of
    `dtype`: float32 for bfloat16, float16 and float32; float64 for float64 (the float64
    finite-difference gradient test, under jax_enable_x64). One rule for the XLA paths of the
    kernels and the model (the Pallas kernels accumulate in float32)."""
    return jnp.promote_types(dtype, jnp.float32)


# ----------------------------------------------------------------------------- dispatch


def on_gpu() -> bool:
    return jax.default_backend() == "gpu"


def resolve_implementation(implementation: str) -> str:
    """'auto' -> 'pallas' on a GPU backend, 'xla' otherwise."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if implementation == "auto":
        return "pallas" if on_gpu() else "xla"
    return implementation


def compiler_params(num_warps: int = 4, num_stages: int = 2):
    """Explicit Triton params: selects the Triton backend (Ampere and Hopper), not Mosaic GPU."""
    return pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages)


# ----------------------------------------------------------------------------- padding
# The project's rules for padded sizes (msa_jax uses these too): a padded size is a multiple of a
# block (`round_up`), a power of two (`next_pow2`: few distinct shapes, few compilations), or a
# size of a geometric series (`geometric_size`: bounded padding for large, growing arrays).


def cdiv(n, d):
    """ceil(n / d) for non-negative ints or integer arrays (traced ones too)."""
    return -(-n // d)


def round_up(n, multiple: int):
    """The multiple of `multiple` >= n (ints or integer arrays)."""
    return cdiv(n, multiple) * multiple


def next_pow2(n: int, minimum: int = 1) -> int:
    """The power of two >= n, at least `minimum`."""
    pow2 = 1 if n <= 1 else 1 << (int(n) - 1).bit_length()
    return max(int(minimum), pow2)


def prev_pow2(n: int) -> int:
    """The power of two <= n (n >= 1)."""
    if n < 1:
        raise ValueError(f"prev_pow2 needs n >= 1, got {n}")
    return 1 << (int(n).bit_length() - 1)


def geometric_size(n: int, minimum: int, steps_per_octave: int = 8) -> int:
    """max(n, minimum) rounded up to a multiple of 2**floor(log2 n) / s (s = steps_per_octave):
    s evenly spaced sizes between consecutive powers of two, so at most 1/s padding, and a new
    size (a recompile) only after growing by about that much."""
    n = max(int(n), int(minimum))
    step = max(1, (1 << (n.bit_length() - 1)) // steps_per_octave)
    return round_up(n, step)


def block_size(n: int, preferred: int, minimum: int = 16) -> int:
    """A power-of-two block for a dimension of size n: `preferred`, shrunk for small n."""
    if preferred & (preferred - 1):
        raise ValueError(f"block size must be a power of two, got {preferred}")
    return max(minimum, min(preferred, next_pow2(n)))


def pad_axis(x: jax.Array, axis: int, size: int, value: Any = 0) -> jax.Array:
    """Pads `x` along `axis` at the end up to `size` with `value`."""
    extra = size - x.shape[axis]
    if extra < 0:
        raise ValueError(f"cannot pad axis {axis} of {x.shape} down to {size}")
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def load_rows(ref, start, size: int, limit, *index):
    """In a kernel: ref[start:start + size, *index] as a 2-D [size, H] block (index defaults to
    ":" for a 2-D ref). Rows at or past `limit` read as 0 and are never touched in memory (a masked
    Triton load), so ragged arrays need no padded copy. limit None: a plain load."""
    idx = (pl.ds(start, size), *(index or (slice(None),)))
    if limit is None:
        return ref[idx]
    rows = start + jnp.arange(size)
    return pl_triton.load(ref.at[idx], mask=(rows < limit)[:, None], other=0)


# ----------------------------------------------------------------------------- validation


def check_array(
    name: str, x: Any, shape: Sequence[int | None], dtypes: Sequence[Any] | str
) -> None:
    """Raises a ValueError naming `name` unless x has `shape` (None: any size) and dtype in `dtypes`
    ("float": any floating dtype, "int": any integer dtype)."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    if len(x.shape) != len(shape) or any(e is not None and e != s for s, e in zip(x.shape, shape)):
        want = "[" + ", ".join("?" if e is None else str(e) for e in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    dt = jnp.dtype(x.dtype)
    ok = (
        (dtypes == "float" and jnp.issubdtype(dt, jnp.floating))
        or (dtypes == "int" and jnp.issubdtype(dt, jnp.integer))
        or (not isinstance(dtypes, str) and dt in [jnp.dtype(d) for d in dtypes])
    )
    if not ok:
        raise ValueError(f"{name} must have dtype {dtypes}, got {dt} (shape {tuple(x.shape)})")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_gqa(num_heads: int, num_kv_heads: int, q_name: str, kv_name: str) -> int:
    """Returns the GQA group size N // K, or raises if K does not divide N."""
    if num_kv_heads <= 0 or num_heads % num_kv_heads:
        raise ValueError(
            f"{q_name} has {num_heads} heads, not a multiple of the {num_kv_heads} "
            f"KV heads of {kv_name}"
        )
    return num_heads // num_kv_heads


# ----------------------------------------------------------------------------- CUDA lowering


def _triton_custom_call_name() -> str:
    # 0.12 exports the name; 0.10.2 hard-codes it in the lowering.
    return getattr(pl_triton, "CUSTOM_CALL_TARGET_NAME", "__gpu$xla.gpu.triton")


def _abstract_gpu_mesh():
    """On JAX >= 0.11 Pallas asks the (abstract) mesh for the device; give it an H100."""
    sharding = jax.sharding
    if not hasattr(sharding, "use_abstract_mesh") or not hasattr(sharding, "AbstractDevice"):
        return contextlib.nullcontext()
    device = sharding.AbstractDevice(
        device_kind="NVIDIA H100 80GB HBM3", platform="gpu", num_cores=132
    )
    mesh = sharding.AbstractMesh((), (), abstract_device=device)
    return sharding.use_abstract_mesh(mesh)


def lower_for_cuda(fn: Callable, *args: Any) -> str:
    """Lowers `fn(*args)` (arrays or ShapeDtypeStructs) for CUDA on any host, running the
    Pallas->Triton lowering; returns the StableHLO text. Raises if a kernel cannot lower."""
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args]
    check = jax.export.DisabledSafetyCheck.custom_call(_triton_custom_call_name())
    with _abstract_gpu_mesh():
        exported = jax.export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=[check])(
            *specs
        )
    return exported.mlir_module()


def count_triton_calls(stablehlo_text: str) -> int:
    """Number of Triton kernel custom calls in a lowered module."""
    return stablehlo_text.count(_triton_custom_call_name())
