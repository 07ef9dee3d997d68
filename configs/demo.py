"""`msa-jax demo`: the bundled trained tiny MSA model (models/msa-tiny-demo) answering held-out
questions from a memory of about 1M tokens, through Memory Interleave, in a few minutes on CPU.

    msa-jax demo                                              # these defaults
    msa-jax demo --config.memory_tokens=10_000_000 --config.haystack=real
    msa-jax demo --config.ask.questions="('What is the lucky boat of Lena K. Sato?',)"

The questions are the first of the versioned evaluation set (msa_jax/eval/evalset.py: persons
held out of training); the distractors name training persons only, so every answer has exactly
one source in the memory.
"""

from ml_collections import config_dict


def get_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.output_dir = "outputs/demo"  # answers.json lands here
    c.model = ""  # a checkpoint folder (Hugging Face layout); "" = the bundled models/msa-tiny-demo
    c.kernel_implementation = "auto"  # "xla" | "pallas" | "auto" (Pallas on GPU only)
    c.seed = 0  # seed of the distractors and of the needles' places in the memory

    c.memory_tokens = 1_000_000  # distractor tokens in the memory (the needles come on top)
    c.haystack = "synthetic"  # "synthetic" fact documents or "real" text (Python docstrings)
    c.corpus = ""  # a corpus file of your own (JSONL/TSV, msa_jax.data.load_corpus) instead
    c.queries = ""  # a query file of your own (msa_jax.data.load_queries) instead of the set
    c.single_hop = 8  # single-hop questions of the evaluation set to ask
    c.two_hop = 4  # two-hop questions of the evaluation set to ask

    c.memory = config_dict.ConfigDict()
    c.memory.block_tokens = 0  # tokens per encoding block; 0 = automatic
    c.memory.dtype = ""  # dtype of the bank's tiers; "" = the model's compute dtype
    c.memory.routing_dtype = ""  # routing tier: "" = memory.dtype, or int8 (docs/architecture.md)

    c.ask = config_dict.ConfigDict()
    c.ask.questions = ()  # questions of your own, e.g. --config.ask.questions="('Hi?',)"
    c.ask.interleave = True  # Memory Interleave: retrieve by id, re-inject the text, answer
    # a round names only a document it routed (or ends retrieval): decoding masked to those
    # responses (msa_jax/inference/constrain.py); False = free decoding, as the reference
    c.ask.constrain_ids = True
    c.ask.max_rounds = 3  # Memory Interleave rounds at most
    c.ask.max_new_tokens = 16  # tokens per Memory Interleave round
    c.ask.answer_tokens = 16  # tokens of the answer
    # documents each router layer selects; 0 = the model's top_k_docs (2 for the bundled model,
    # as it was trained); the bundled model's router ranks a question's document in its top 10
    # among thousands far more often than first (its model card), so the demo reads 8
    c.ask.top_k = 8
    return c
