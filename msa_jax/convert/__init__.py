"""Checkpoint conversion: Hugging Face / upstream MSA safetensors <-> parameters."""

from msa_jax.convert.convert import convert_checkpoint
from msa_jax.convert.hf import (CheckpointError, load_pretrained, params_from_tensors, read_config,
                                save_pretrained, tensors_from_params)

__all__ = ["CheckpointError", "convert_checkpoint", "load_pretrained", "params_from_tensors", "read_config",
           "save_pretrained", "tensors_from_params"]
