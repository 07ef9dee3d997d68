"""`msa-jax smoke`: the whole pipeline on a tiny RANDOM model, offline, in well under a minute.

    msa-jax smoke                                            # these defaults
    msa-jax smoke --config.model.dtype=bfloat16 --config.corpus.num_docs=64

Steps: random Qwen3 checkpoint (Hugging Face format, byte tokenizer) -> convert (cast) ->
generate -> upgrade to MSA (router layers) -> encode a synthetic corpus into a memory bank ->
save / load it -> ask questions with and without Memory Interleave, printing the routed documents.
The weights are random: answers are gibberish and routing scores are noise (`msa-jax demo` runs
the trained model). The sections `model`, `msa`, `memory`, `generation`, `ask` mean the same in
every config file (see configs/tiny.py, configs/msa_4b.py).
"""

from ml_collections import config_dict


def get_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.output_dir = "outputs/smoke"  # checkpoints, corpus, queries, bank, answers.json land here
    c.seed = 0  # seed of the random weights (the same seed gives the same model and bank)

    c.model = config_dict.ConfigDict()
    c.model.preset = "tiny"  # msa_jax.config preset the sizes below start from
    # The byte tokenizer's 263 ids (7 special + 256 bytes): every id the model emits decodes.
    c.model.vocab_size = 263
    c.model.num_layers = 2  # decoder layers (few layers: JIT compilation dominates on CPU)
    c.model.hidden_size = 64  # D
    c.model.intermediate_size = 128  # MLP width
    c.model.num_heads = 4  # N query heads
    c.model.num_kv_heads = 2  # K key/value heads
    c.model.head_dim = 16  # H
    c.model.checkpoint_dtype = "bfloat16"  # dtype `convert` casts the checkpoint to
    c.model.dtype = "float32"  # compute dtype when the checkpoint is loaded (also the bank's)
    c.model.kernel_implementation = "auto"  # "xla" | "pallas" | "auto" (Pallas on GPU only)

    c.msa = config_dict.ConfigDict()
    c.msa.router_layers = "0,1"  # layers that route to memory: "0,1", or "all"
    c.msa.pooling_size = 8  # P: tokens per pooled chunk
    c.msa.top_k_docs = 4  # documents each router layer selects per question

    c.corpus = config_dict.ConfigDict()
    c.corpus.num_docs = 16  # synthetic fact documents (msa_jax.data.make_needle_task)
    c.corpus.facts_per_doc = (1, 3)  # inclusive range of fact sentences per document
    c.corpus.seed = 0  # seed of the synthetic corpus and questions

    c.memory = config_dict.ConfigDict()
    c.memory.block_tokens = 0  # tokens per encoding block; 0 = automatic
    c.memory.dtype = ""  # dtype of the bank's tiers; "" = the model's compute dtype
    c.memory.routing_dtype = ""  # routing tier: "" = memory.dtype, or int8 (docs/architecture.md)

    c.generation = config_dict.ConfigDict()
    c.generation.prompt = "The lucky boat of"  # prompt of the plain-generation step
    c.generation.max_new_tokens = 16
    c.generation.temperature = 0.0  # 0 = greedy
    c.generation.top_p = 1.0
    c.generation.seed = 0

    c.ask = config_dict.ConfigDict()
    c.ask.num_questions = 2  # synthetic questions, each answered by one document of the corpus
    c.ask.questions = ()  # extra questions of your own, e.g. --config.ask.questions="('Hi?',)"
    c.ask.interleave_modes = "both"  # "both", "on" or "off": with / without Memory Interleave
    c.ask.max_rounds = 2  # Memory Interleave rounds at most
    c.ask.max_new_tokens = 16  # tokens per Memory Interleave round
    c.ask.answer_tokens = 16  # tokens of the answer
    return c
