"""Prefill and decode throughput of msa-jax's Qwen3 against `transformers` on this machine's CPU,
same random model, same run; prints tokens/s and the ratio.

    python benchmarks/qwen3_vs_transformers.py [--layers 4 --hidden 512 --prompt 512 --new 128]

Needs the [test] extra (torch, transformers). Targets (issue 2): prefill >= 1x, decode >= 2x.
"""

import argparse
import os
import tempfile
import time

import numpy as np


def timed(fn, repeats):
    fn()  # warm-up (compilation)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv_heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch
    import transformers

    import jax
    import msa_jax
    from msa_jax.inference.generate import generate

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    hc = transformers.Qwen3Config(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, head_dim=args.hidden // args.heads,
        max_position_embeddings=4096, tie_word_embeddings=True)
    hf = transformers.Qwen3ForCausalLM(hc).eval()
    path = os.path.join(tempfile.mkdtemp(), "qwen3")
    hf.save_pretrained(path)
    model = msa_jax.from_pretrained(path)
    ids = np.random.RandomState(0).randint(1, args.vocab, (args.batch, args.prompt))
    n_prefill = args.batch * args.prompt
    n_decode = args.batch * args.new

    def jax_prefill():
        jax.block_until_ready(model(ids))

    def hf_prefill():
        with torch.no_grad():
            hf(torch.tensor(ids))

    def jax_decode():
        generate(model.cfg, model.params, ids.tolist(), args.new, eos_ids=())

    def hf_decode():
        with torch.no_grad():
            hf.generate(torch.tensor(ids), attention_mask=torch.ones(ids.shape),
                        max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False,
                        pad_token_id=0)

    t_jp, t_hp = timed(jax_prefill, args.repeats), timed(hf_prefill, args.repeats)
    t_jd, t_hd = timed(jax_decode, args.repeats), timed(hf_decode, args.repeats)
    # decode time excludes the prompt's prefill, measured above
    jd = n_decode / max(t_jd - t_jp, 1e-9)
    hd = n_decode / max(t_hd - t_hp, 1e-9)
    print(f"config: layers={args.layers} hidden={args.hidden} heads={args.heads}/"
          f"{args.kv_heads} vocab={args.vocab} batch={args.batch} prompt={args.prompt} "
          f"new={args.new}; jax {jax.__version__}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {os.cpu_count()} CPU cores")
    print(f"{'':10s}{'msa-jax':>14s}{'transformers':>14s}{'ratio':>8s}")
    print(f"{'prefill':10s}{n_prefill / t_jp:12.0f}/s{n_prefill / t_hp:12.0f}/s"
          f"{t_hp / t_jp:7.2f}x")
    print(f"{'decode':10s}{jd:12.1f}/s{hd:12.1f}/s{jd / hd:7.2f}x")


if __name__ == "__main__":
    main()
