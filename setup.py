"""msa-jax: Memory Sparse Attention (MSA) in JAX/Flax with Pallas kernels."""
from setuptools import find_packages, setup

RUNTIME = [
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11",
    "grain>=0.2.10",
    "absl-py>=2.1",
    "safetensors>=0.4",
    "numpy>=1.26",
    "tqdm>=4.66",
    "ml_collections>=1.0",
    "tensorboardX>=2.6",
    "tokenizers>=0.15",  # the bundled demo model's BPE tokenizer (and Qwen3's tokenizer.json)
]

TEST = [
    "pytest>=8",
    "pytest-xdist>=3.8",
    "nbformat>=5.9",
    "nbclient>=0.10",
    "ipykernel>=6.29",
    "bm25s>=0.3.16",  # the BM25 baseline's tests (msa_jax/eval/bm25.py)
]

# The evaluation kit (msa_jax/eval: the scaling benchmark's BM25 baseline, its plot); the runtime
# (encode, ask, demo, train) never imports it.
EVAL = ["bm25s>=0.3.16", "matplotlib>=3.8"]

# torch is only for tests that compare with transformers; 2.13.0 is the CPU wheel on the CI machine.
TORCH = ["torch==2.13.0", "transformers>=4.51"]

setup(
    name="msa-jax",
    version="0.1.0",
    description="Memory Sparse Attention (MSA): a JAX/Flax implementation with Pallas GPU kernels",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # configs/ and models/ stay top-level in the repository and ship in the wheel as
    # msa_jax/configs and msa_jax/models, so that `msa-jax demo` finds its bundled config and
    # model in an installed package too.
    packages=find_packages(include=["msa_jax", "msa_jax.*", "kernels_pallas", "kernels_pallas.*"])
    + ["msa_jax.configs", "msa_jax.models"],
    package_dir={"msa_jax.configs": "configs", "msa_jax.models": "models"},
    package_data={"msa_jax.models": ["*/*"]},
    install_requires=RUNTIME,
    extras_require={
        "test": TEST + TORCH,
        "test-notorch": TEST,
        "eval": EVAL,
        "gpu": ["jax[cuda12]"],
    },
    entry_points={"console_scripts": ["msa-jax=msa_jax.cli.main:run"]},
)
