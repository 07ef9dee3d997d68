"""Training losses (docs/msa.md §6): next-token LM loss and the router's contrastive loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels_pallas.common import accum_dtype

from msa_jax.config import ModelConfig
from msa_jax.errors import ConfigError

Array = jax.Array
IGNORE = -100
METHODS = ("INFONCE_DECOUPLE", "INFONCE", "BCE")  # routing-loss variants


def check_method(method: str) -> None:
    """ConfigError naming `method` unless it is one of `METHODS`."""
    if method not in METHODS:
        raise ConfigError(f"aux_loss_method {method!r} is not implemented ({', '.join(METHODS)})")


def lm_loss(logits: Array, labels: Array) -> Array:
    """Mean next-token cross-entropy: logits[:, t] predict labels[:, t + 1] (labels -100 ignored).
    logits [B, L, V], labels [B, L]; computed in accum_dtype(logits.dtype) (float32, or float64)."""
    target = labels[:, 1:]
    logp = jax.nn.log_softmax(logits[:, :-1].astype(accum_dtype(logits.dtype)), axis=-1)
    valid = target != IGNORE
    nll = -jnp.take_along_axis(logp, jnp.where(valid, target, 0)[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(valid.sum(), 1)


def routing_loss_terms(scores: Array, doc_labels: Array, temperature: float,
                       method: str) -> tuple[Array, Array]:
    """Per-sample contrastive loss of one router layer and whether it is defined.

    scores [B, M] (document scores; -inf = absent), doc_labels [B, M] (1 = positive).
    INFONCE_DECOUPLE (paper Eq. 5): each positive competes only with the negatives,
    -log(e^{s_i/t} / (e^{s_i/t} + sum_neg e^{s_j/t})), averaged over the positives.
    INFONCE: each positive against every present document (positives included).
    BCE: every present document is a binary decision on the logit s/t (positive: -log sigmoid,
    negative: -log(1 - sigmoid)), averaged over the present documents.
    Returns (loss [B], defined [B]: the sample has a positive).
    """
    present = jnp.isfinite(scores)
    z = jnp.where(present, scores / temperature, -jnp.inf)
    pos = (doc_labels > 0) & present
    neg = (doc_labels <= 0) & present
    if method == "INFONCE_DECOUPLE":
        lse_neg = jax.nn.logsumexp(jnp.where(neg, z, -jnp.inf), axis=-1, keepdims=True)
        denom = jnp.logaddexp(z, lse_neg)
    elif method == "INFONCE":
        denom = jax.nn.logsumexp(z, axis=-1, keepdims=True)
    elif method == "BCE":
        zf = jnp.where(present, z, 0.0)
        bce = jnp.where(pos, jax.nn.softplus(-zf), jax.nn.softplus(zf))  # -log sigmoid(+-z)
        n = present.sum(-1)
        per_doc = jnp.where(present, bce, 0.0).sum(-1) / jnp.maximum(n, 1)
        return per_doc, pos.sum(-1) > 0
    else:
        check_method(method)  # raises: not one of METHODS
    per = jnp.where(pos, denom - z, 0.0)  # -log softmax of each positive
    n_pos = pos.sum(-1)
    return per.sum(-1) / jnp.maximum(n_pos, 1), n_pos > 0


def routing_loss(cfg: ModelConfig, doc_scores: tuple[Array, ...], doc_labels: Array) -> Array:
    """The auxiliary loss averaged over (router layer >= num_layers // 2, sample with a positive).

    doc_scores: per router layer [B, M + 1] (column 0 unused); doc_labels [B, M].
    """
    msa = cfg.msa
    terms, defined = [], []
    for layer, scores in zip(msa.router_layers, doc_scores):
        if layer < cfg.num_layers // 2:
            continue
        loss, ok = routing_loss_terms(scores[:, 1:], doc_labels, msa.infonce_temperature,
                                      msa.aux_loss_method)
        terms.append(loss)
        defined.append(ok)
    if not terms:
        return jnp.zeros((), jnp.float32)
    loss, ok = jnp.stack(terms), jnp.stack(defined)
    return jnp.sum(jnp.where(ok, loss, 0.0)) / jnp.maximum(ok.sum(), 1)


def batch_labels(doc_labels: Array) -> Array:
    """doc_labels [B, M] -> [B, B * (M + 1)] aligned with train_forward's `batch_scores`:
    row b's positives in its own block b (column 0 of each block is never a document)."""
    b, m = doc_labels.shape
    rows = jnp.arange(b)
    full = jnp.zeros((b, b, m + 1), doc_labels.dtype).at[rows, rows, 1:].set(doc_labels)
    return full.reshape(b, b * (m + 1))[:, 1:]


def router_recall(scores: Array, doc_labels: Array, k: int) -> Array:
    """Fraction of positives among the top-k scored documents, averaged over samples with a
    positive. scores [B, M] (-inf absent), doc_labels [B, M]."""
    k = min(k, scores.shape[-1])
    _, top = jax.lax.top_k(scores, k)
    hit = jnp.take_along_axis(doc_labels > 0, top, axis=-1) & jnp.isfinite(
        jnp.take_along_axis(scores, top, axis=-1))
    n_pos = (doc_labels > 0).sum(-1)
    recall = hit.sum(-1) / jnp.maximum(jnp.minimum(n_pos, k), 1)
    ok = n_pos > 0
    return jnp.sum(jnp.where(ok, recall, 0.0)) / jnp.maximum(ok.sum(), 1)
