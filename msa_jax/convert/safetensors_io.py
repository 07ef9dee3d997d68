"""Reading and writing safetensors files without torch (numpy + ml_dtypes for bfloat16).

The format: 8-byte little-endian header size, a JSON header {name: {dtype, shape, data_offsets}},
then the raw bytes. Reading memory-maps the file, so a multi-GB checkpoint is not loaded at once.
Every structural problem raises `CheckpointError` naming the file and the tensor.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Iterator, Mapping

import ml_dtypes
import numpy as np

from msa_jax.errors import CheckpointError

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def _read_header(path: str) -> tuple[dict, int]:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", raw)
        if 8 + n > size:
            raise CheckpointError(f"{path}: truncated safetensors file (header of {n} bytes, "
                                  f"file of {size})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from e
    return header, 8 + n


def read_file(path: str) -> dict[str, np.ndarray]:
    """name -> array (memory-mapped, read-only) for one .safetensors file."""
    header, start = _read_header(path)
    size = os.path.getsize(path)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')}")
        shape = tuple(info["shape"])
        begin, end = info["data_offsets"]
        want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end - begin != want:
            raise CheckpointError(f"{path}: tensor {name!r} has {end - begin} bytes for shape "
                                  f"{shape} {info['dtype']} (needs {want})")
        if start + end > size:
            raise CheckpointError(f"{path}: truncated file: tensor {name!r} ends at byte "
                                  f"{start + end}, the file has {size}")
        out[name] = np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=shape) \
            if want else np.zeros(shape, dtype)
    return out


def checkpoint_files(directory: str) -> list[str]:
    """The safetensors files of a Hugging Face checkpoint directory (single or sharded)."""
    index = os.path.join(directory, INDEX_FILE)
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map", {})
        files = sorted(set(weight_map.values()))
        missing = [p for p in files if not os.path.exists(os.path.join(directory, p))]
        if missing:
            raise CheckpointError(f"{index} names shards that do not exist: {missing}")
        return [os.path.join(directory, p) for p in files]
    single = os.path.join(directory, SINGLE_FILE)
    if os.path.exists(single):
        return [single]
    found = sorted(p for p in os.listdir(directory) if p.endswith(".safetensors"))
    if not found:
        raise CheckpointError(f"{directory}: no {SINGLE_FILE}, {INDEX_FILE} or *.safetensors")
    return [os.path.join(directory, p) for p in found]


def read_checkpoint(directory: str) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint directory; a name in two shards is an error."""
    tensors: dict[str, np.ndarray] = {}
    where: dict[str, str] = {}
    for path in checkpoint_files(directory):
        for name, arr in read_file(path).items():
            if name in tensors:
                raise CheckpointError(f"tensor {name!r} appears in both {where[name]} and {path}")
            tensors[name], where[name] = arr, path
    return tensors


def _iter_bytes(arr: np.ndarray) -> Iterator[memoryview]:
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    step = 1 << 26
    for i in range(0, flat.size, step):
        yield memoryview(flat[i:i + step])


def write_file(path: str, tensors: Mapping[str, np.ndarray], metadata: dict | None = None):
    """Write one .safetensors file (tensors in sorted name order)."""
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    names = sorted(tensors)
    for name in names:
        arr = tensors[name]
        if arr.dtype not in _NAMES:
            raise CheckpointError(f"tensor {name!r}: dtype {arr.dtype} cannot be saved")
        header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in names:
            for chunk in _iter_bytes(tensors[name]):
                f.write(chunk)


def write_checkpoint(directory: str, tensors: Mapping[str, np.ndarray],
                     max_shard_bytes: int = 5 * 2**30):
    """Write tensors into `directory` as one file, or as shards plus the index file."""
    total = sum(a.nbytes for a in tensors.values())
    if total <= max_shard_bytes:
        write_file(os.path.join(directory, SINGLE_FILE), tensors)
        return
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        if size and size + tensors[name].nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += tensors[name].nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_file(os.path.join(directory, fname), shard)
        weight_map.update({name: fname for name in shard})
    with open(os.path.join(directory, INDEX_FILE), "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
