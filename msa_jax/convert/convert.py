"""`msa-jax convert`: read a checkpoint (validating every tensor), write it back out.

Uses: cast a checkpoint to another dtype, upgrade a Qwen3 checkpoint to MSA (router projections
initialised as the reference does), or check that a checkpoint loads. The destination is written
atomically (tokenizer files included), so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

from msa_jax.config import MSAConfig
from msa_jax.convert.hf import load_pretrained, save_pretrained


def convert_checkpoint(src: str, dst: str, *, dtype: str | None = None,
                       msa: MSAConfig | None = None, seed: int = 0, overwrite: bool = False,
                       max_shard_bytes: int = 5 * 2**30) -> str:
    cfg, params = load_pretrained(src, param_dtype=dtype, msa=msa, seed=seed)
    return save_pretrained(dst, cfg, params, dtype=dtype, overwrite=overwrite,
                           max_shard_bytes=max_shard_bytes, copy_from=src)
