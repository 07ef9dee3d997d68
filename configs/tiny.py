"""Inference settings for tiny models (the `tiny` / `tiny-msa` presets, tests, CPU experiments).

    msa-jax init --preset=tiny-msa --out=ckpt/tiny-msa
    msa-jax encode --config=configs/tiny.py --model=ckpt/tiny-msa --corpus=docs.jsonl --out=bank
    msa-jax ask --config=configs/tiny.py --config.ask.interleave=False --model=ckpt/tiny-msa ...

Explicit flags win over these values. Same sections as configs/msa_4b.py.
"""

from ml_collections import config_dict


def get_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()

    c.model = config_dict.ConfigDict()
    c.model.dtype = "float32"  # compute dtype (float32: CPU, exact comparisons in tests)
    c.model.param_dtype = "float32"  # dtype `convert` writes the weights in
    c.model.kernel_implementation = "xla"  # the XLA reference kernels (CPU)

    c.msa = config_dict.ConfigDict()
    c.msa.router_layers = "2,3"  # used by `convert` to upgrade a 4-layer Qwen3; "" = no upgrade
    c.msa.pooling_size = 8  # P: tokens per pooled chunk (when upgrading)
    c.msa.top_k_docs = 4  # documents each router layer selects per question

    c.memory = config_dict.ConfigDict()
    c.memory.block_tokens = 0  # tokens per encoding block; 0 = automatic
    c.memory.dtype = "float32"  # dtype of the bank's tiers

    c.generation = config_dict.ConfigDict()
    c.generation.max_new_tokens = 16
    c.generation.temperature = 0.0  # 0 = greedy
    c.generation.top_p = 1.0
    c.generation.seed = 0

    c.ask = config_dict.ConfigDict()
    c.ask.interleave = True  # Memory Interleave rounds before the answer
    c.ask.constrain_ids = False  # True: a round names only a document it routed (or ends retrieval)
    c.ask.max_rounds = 2
    c.ask.max_new_tokens = 16  # tokens per retrieval round
    c.ask.answer_tokens = 16  # tokens of the answer
    return c
