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
    c.model.aux_loss_method = "INFONCE_DECOUPLE"  # or INFONCE, BCE
    c.model.inference_score_mode = "cosine"  # route at inference as in training (cosine)

    c.optim = config_dict.ConfigDict()
    c.optim.weight_decay = 0.01
    c.optim.clip_norm = 1.0
    c.optim.accumulate_steps = 1
    c.optim.freeze = ""  # "", "router" or "backbone"
    c.optim.warmup = config_dict.ConfigDict()  # phase 1: router warm-up (steps 0 = skip)
    c.optim.warmup.steps = 20
    c.optim.warmup.lr = 3e-3
    c.optim.warmup.warmup_steps = 5
    c.optim.warmup.decay = "constant"
    c.optim.warmup.end_lr = 3e-3
    c.optim.warmup.lm_weight = 0.1
    c.optim.warmup.aux_weight = 1.0
    c.optim.warmup.router_lr_scale = 1.0
    c.optim.warmup.backbone_lr_scale = 1.0
    c.optim.main = config_dict.ConfigDict()  # phase 2: everything
    c.optim.main.steps = 180
    c.optim.main.lr = 2e-3
    c.optim.main.warmup_steps = 10
    c.optim.main.decay = "cosine"
    c.optim.main.end_lr = 1e-4
    c.optim.main.lm_weight = 1.0
    c.optim.main.aux_weight = 0.1
    c.optim.main.router_lr_scale = 1.0
    c.optim.main.backbone_lr_scale = 1.0

    c.data = config_dict.ConfigDict()
    c.data.samples = ""  # a JSONL file of samples (docs/training_data.md); "" = the synthetic task
    c.data.num_queries = 512  # training questions (each over docs_per_sample documents)
    c.data.hops = 1
    c.data.docs_per_sample = 4
    c.data.hard_negatives = 0
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
