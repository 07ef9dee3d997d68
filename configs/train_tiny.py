"""Train a tiny MSA model on the synthetic fact-retrieval task, on CPU, in minutes.

    msa-jax train --config=configs/train_tiny.py --workdir=runs/tiny
    msa-jax train --config=configs/train_tiny.py --workdir=runs/tiny --config.optim.main.steps=400

Run again with the same --workdir to resume. The model is the `tiny-msa` preset with the byte
tokenizer's vocabulary (263); the final params are exported to WORKDIR/export (Hugging Face
layout: `msa-jax encode/ask --model=WORKDIR/export`). Sections: model, optim (two phases, the
paper's: router warm-up `0.1 L_LM + L_aux`, then `L_LM + 0.1 L_aux`), data (the synthetic task
and the pipeline), eval (router recall among a large held-out memory), train (loop settings).
"""

from ml_collections import config_dict


def _phase(**values) -> config_dict.ConfigDict:
    """One training phase: its steps, learning-rate schedule, loss weights and the learning-rate
    scales of the two parameter groups (router projections, the rest)."""
    phase = config_dict.ConfigDict(values)
    phase.router_lr_scale = 1.0
    phase.backbone_lr_scale = 1.0
    return phase


def get_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()

    c.model = config_dict.ConfigDict()
    c.model.preset = "tiny-msa"  # used unless --init_from names a checkpoint
    c.model.vocab_size = 263  # the byte tokenizer's
    c.model.dtype = "float32"  # compute dtype ("bfloat16": float32 master weights, bf16 compute)
    c.model.param_dtype = "float32"
    c.model.kernel_implementation = "xla"  # "pallas" on GPU
    c.model.remat = False  # recompute each layer in the backward pass
    c.model.top_k_docs = 2  # documents each router layer selects in training
    c.model.shared_selection = False  # True: every router layer reads the first one's choice
    c.model.aux_loss_method = "INFONCE_DECOUPLE"  # or INFONCE, BCE
    c.model.inference_score_mode = "cosine"  # route at inference as in training (cosine)

    c.optim = config_dict.ConfigDict()
    c.optim.weight_decay = 0.01
    c.optim.clip_norm = 1.0
    c.optim.accumulate_steps = 1
    c.optim.freeze = ""  # "", "router", "backbone" or "routing" (docs/training.md)
    # router layers' memory in the LM path: "routed" (the top-k, as the paper) or "target"
    # (the step's right documents: teacher-forced selection, docs/training.md)
    c.optim.read = "routed"
    # phase 1: router warm-up, 0.1 L_LM + L_aux (steps 0 = skip); phase 2: L_LM + 0.1 L_aux
    c.optim.warmup = _phase(steps=20, lr=3e-3, warmup_steps=5, decay="constant", end_lr=3e-3,
                            lm_weight=0.1, aux_weight=1.0)
    c.optim.main = _phase(steps=180, lr=2e-3, warmup_steps=10, decay="cosine", end_lr=1e-4,
                          lm_weight=1.0, aux_weight=0.1)

    c.data = config_dict.ConfigDict()
    c.data.samples = ""  # a JSONL file of samples (docs/training_data.md); "" = the synthetic task
    c.data.num_queries = 512  # training questions (each over docs_per_sample documents)
    c.data.hops = 1
    c.data.kinds = ("retrieve", "answer")  # which steps of each chain to train on
    c.data.docs_per_sample = 4
    c.data.hard_negatives = 0
    c.data.facts_per_doc = (2, 5)  # (low, high) facts per synthetic document
    c.data.answer_routing = True  # False: the answer steps carry no routing labels
    c.data.batch_size = 8  # global batch
    c.data.length_buckets = (1024, 1280)
    c.data.doc_buckets = (4,)
    c.data.worker_count = 0
    c.data.prefetch = 2
    c.data.seed = 0

    c.eval = config_dict.ConfigDict()
    c.eval.every = 100  # steps; 0 = never
    c.eval.num_queries = 64
    c.eval.memory_docs = 1000  # documents in the held-out memory
    c.eval.batch_size = 16

    c.train = config_dict.ConfigDict()
    c.train.seed = 0
    c.train.log_every = 10
    c.train.checkpoint_every = 50
    c.train.keep = 3
    c.train.export = True  # export the final params to WORKDIR/export
    return c
