"""The Qwen3 decoder stack with MSA router projections (docs/msa.md §1-§2).

The stack is written once. How a layer's queries meet keys differs between the forwards (encode
documents, query with memory, decode, train), so `DecoderLayer` takes an `attend` callable:

    attend(layer_index, Projections) -> (attention output [B, T, N, H], per-layer extras)

Each forward in this package supplies its own `attend`; projections, norms, MLP and residuals are
shared by all of them. The projections and the residual stream carry logical sharding constraints
(msa_jax/sharding.py `constrain`): they act while a mesh is set (`sharding.use_mesh`), else none.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from kernels_pallas.common import accum_dtype
from msa_jax.config import ModelConfig
from msa_jax.model.layers import MLP, Einsum, Embed, RMSNorm, apply_rope
from msa_jax.sharding import constrain

Array = jax.Array


@flax.struct.dataclass
class Projections:
    """One layer's projections of its normalised input.

    q [B, T, N, H] and k [B, T, K, H] are after q_norm/k_norm and RoPE; v [B, T, K, H].
    Router layers add the routing query qr [B, T, N, H] and router key kr [B, T, K, H] (no norm, no
    RoPE). Without `decouple_router` they are q and k themselves.
    """

    q: Array
    k: Array
    v: Array
    qr: Array | None = None
    kr: Array | None = None


Attend = Callable[[int, Projections], tuple[Array, Any]]


def _dtypes(cfg: ModelConfig):
    return dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))


class Attention(nn.Module):
    cfg: ModelConfig
    router: bool = False

    def setup(self):
        c, kw = self.cfg, _dtypes(self.cfg)
        d, n, k, h = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
        self.q_proj = Einsum((d, n, h), ("embed", "q_heads", "head_dim"), "btd,dnh->btnh", **kw)
        self.k_proj = Einsum((d, k, h), ("embed", "kv_heads", "head_dim"), "btd,dkh->btkh", **kw)
        self.v_proj = Einsum((d, k, h), ("embed", "kv_heads", "head_dim"), "btd,dkh->btkh", **kw)
        self.o_proj = Einsum((n, h, d), ("q_heads", "head_dim", "embed"), "btnh,nhd->btd", **kw)
        self.q_norm = RMSNorm(c.rms_norm_eps, "head_dim", kw["param_dtype"])
        self.k_norm = RMSNorm(c.rms_norm_eps, "head_dim", kw["param_dtype"])
        if self.router and c.msa.decouple_router:
            std = c.msa.router_init_std
            self.router_q_proj = Einsum((d, n, h), ("embed", "q_heads", "head_dim"),
                                        "btd,dnh->btnh", init_std=std, **kw)
            self.router_k_proj = Einsum((d, k, h), ("embed", "kv_heads", "head_dim"),
                                        "btd,dkh->btkh", init_std=std, **kw)

    def project(self, x: Array, positions: Array) -> Projections:
        """x [B, T, D] (already input-normalised), positions [B, T] -> Projections."""
        theta = self.cfg.rope_theta
        q = apply_rope(self.q_norm(self.q_proj(x)), positions, theta)  # [B, T, N, H]
        k = apply_rope(self.k_norm(self.k_proj(x)), positions, theta)  # [B, T, K, H]
        v = self.v_proj(x)  # [B, T, K, H]
        q = constrain(q, ("batch", "length", "q_heads", "head_dim"))  # binds under use_mesh
        k = constrain(k, ("batch", "length", "kv_heads", "head_dim"))
        v = constrain(v, ("batch", "length", "kv_heads", "head_dim"))
        if not self.router:
            return Projections(q, k, v)
        if self.cfg.msa.decouple_router:
            return Projections(q, k, v, self.router_q_proj(x), self.router_k_proj(x))
        return Projections(q, k, v, q, k)

    def out(self, o: Array) -> Array:  # [B, T, N, H] -> [B, T, D]
        return self.o_proj(o)


class DecoderLayer(nn.Module):
    cfg: ModelConfig
    index: int

    def setup(self):
        c, kw = self.cfg, _dtypes(self.cfg)
        self.input_layernorm = RMSNorm(c.rms_norm_eps, param_dtype=kw["param_dtype"])
        self.post_attention_layernorm = RMSNorm(c.rms_norm_eps, param_dtype=kw["param_dtype"])
        self.self_attn = Attention(c, router=c.is_router_layer(self.index))
        self.mlp = MLP(c.hidden_size, c.intermediate_size, **kw)

    def __call__(self, x: Array, positions: Array, attend: Attend) -> tuple[Array, Any]:
        proj = self.self_attn.project(self.input_layernorm(x), positions)
        o, extras = attend(self.index, proj)  # [B, T, N, H]
        x = x + self.self_attn.out(o.astype(x.dtype))
        x = x + self.mlp(self.post_attention_layernorm(x))
        return constrain(x, ("batch", "length", "embed")), extras


class Transformer(nn.Module):
    """Embedding, decoder layers, final norm, LM head (tied to the embedding when configured)."""

    cfg: ModelConfig

    def setup(self):
        c, kw = self.cfg, _dtypes(self.cfg)
        self.embed_tokens = Embed(c.vocab_size, c.hidden_size, **kw)
        # remat: each layer's activations are recomputed in the backward pass instead of stored
        # (argument 3 of DecoderLayer.__call__, counting self, is the `attend` callable: static)
        layer = nn.remat(DecoderLayer, static_argnums=(3,)) if c.remat else DecoderLayer
        self.layers = [layer(c, i) for i in range(c.num_layers)]
        self.norm = RMSNorm(c.rms_norm_eps, param_dtype=kw["param_dtype"])
        if not c.tie_word_embeddings:
            self.lm_head = Einsum((c.hidden_size, c.vocab_size), ("embed", "vocab"),
                                  "btd,dv->btv", **kw)

    def __call__(self, tokens: Array, positions: Array, attend: Attend,
                 collect_hidden: bool = False):
        """tokens, positions [B, T] -> (final-normed hidden [B, T, D], extras per layer, hidden).

        `hidden` (when collected) follows transformers: embeddings, each layer's output but the
        last, then the final-normed output: num_layers + 1 entries.
        """
        x = self.embed_tokens(tokens)  # [B, T, D]
        hidden = [x]
        extras = []
        for layer in self.layers:
            x, e = layer(x, positions, attend)
            hidden.append(x)
            extras.append(e)
        x = self.norm(x)
        hidden[-1] = x
        return x, tuple(extras), (tuple(hidden) if collect_hidden else None)

    def logits(self, x: Array) -> Array:  # [B, T, D] -> [B, T, V] accum_dtype (f32 or f64)
        if self.cfg.tie_word_embeddings:
            out = self.embed_tokens.attend(x)
        else:
            out = self.lm_head(x)
        return out.astype(accum_dtype(out.dtype))

    def embed(self, tokens: Array) -> Array:
        return self.embed_tokens(tokens)
