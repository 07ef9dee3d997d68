"""msa-jax: Memory Sparse Attention (MSA, arXiv 2603.23516) in JAX/Flax with Pallas kernels.

    import msa_jax
    model = msa_jax.from_pretrained("path/to/MSA-4B", dtype="bfloat16")
    bank = model.encode_memory(documents)
    print(model.ask("question", bank).text)
"""

from msa_jax.api import MSAModel, from_pretrained
from msa_jax.config import ConfigError, MSAConfig, ModelConfig, preset
from msa_jax.convert import CheckpointError
from msa_jax.errors import InputError, MSAError
from msa_jax.inference.interleave import Answer, PromptTemplate
from msa_jax.inference.sampling import Sampling
from msa_jax.memory.bank import BankError, MemoryBank
from msa_jax.memory.parallel import MemoryPlacement
from msa_jax.memory.store import load_bank, save_bank

__version__ = "0.1.0"

__all__ = ["Answer", "BankError", "CheckpointError", "ConfigError", "InputError", "MSAConfig",
           "MSAError", "MSAModel",
           "MemoryBank", "MemoryPlacement", "ModelConfig", "PromptTemplate", "Sampling", "from_pretrained",
           "load_bank", "preset", "save_bank"]
