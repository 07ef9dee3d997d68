"""MSA-4B inference settings (the paper's model: Qwen3-4B-Instruct-2507 + MSA routing).

    msa-jax convert --config=configs/msa_4b.py --src=Qwen3-4B-Instruct-2507 --dst=ckpt/msa-4b-init
    msa-jax encode  --config=configs/msa_4b.py --model=ckpt/MSA-4B --corpus=docs.jsonl --out=bank
    msa-jax ask     --config=configs/msa_4b.py --model=ckpt/MSA-4B --bank=bank --queries=q.jsonl
    msa-jax ask     --config=configs/msa_4b.py --config.msa.top_k_docs=8 ...

Explicit flags win over these values. Sections mean the same in every config (configs/tiny.py).
"""

from ml_collections import config_dict


def get_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()

    c.model = config_dict.ConfigDict()
    c.model.dtype = "bfloat16"  # compute dtype of activations and matmuls
    c.model.param_dtype = "bfloat16"  # dtype `convert` writes the weights in
    c.model.kernel_implementation = "auto"  # "auto": Pallas kernels on GPU, XLA elsewhere

    c.msa = config_dict.ConfigDict()
    # Router layers: used by `convert` to upgrade a plain Qwen3-4B checkpoint; an MSA checkpoint
    # keeps the layers named in its own config.json (MSA-4B: the upper half, 18..35).
    c.msa.router_layers = ",".join(str(i) for i in range(18, 36))
    c.msa.pooling_size = 64  # P: tokens per pooled chunk (used by `convert` when upgrading)
    c.msa.top_k_docs = 16  # documents each router layer selects per question (`ask`)

    c.memory = config_dict.ConfigDict()
    c.memory.block_tokens = 0  # tokens per encoding block; 0 = automatic (4096)
    c.memory.dtype = "bfloat16"  # dtype of the bank's routing and content tiers

    c.generation = config_dict.ConfigDict()
    c.generation.max_new_tokens = 256  # `generate`: tokens to generate at most
    c.generation.temperature = 0.0  # 0 = greedy
    c.generation.top_p = 1.0
    c.generation.seed = 0

    c.ask = config_dict.ConfigDict()
    c.ask.interleave = True  # Memory Interleave: retrieve by document id, re-route, then answer
    c.ask.constrain_ids = False  # True: a round names only a document it routed (or ends retrieval)
    c.ask.max_rounds = 4  # Memory Interleave rounds at most
    c.ask.max_new_tokens = 64  # tokens per retrieval round
    c.ask.answer_tokens = 256  # tokens of the answer
    return c
