"""Routing-loss variants against hand computations (plain Python math, float64)."""

import math

import numpy as np
import pytest

from msa_jax.errors import ConfigError
from msa_jax.training.losses import routing_loss_terms

NEG = -np.inf
TAU = 0.1
# two samples: scores [B, M] (-inf absent) and labels; sample 1 has two positives
SCORES = np.asarray([[0.3, -0.2, 0.1, NEG], [0.05, 0.4, -0.1, 0.2]], np.float32)
LABELS = np.asarray([[1, 0, 0, 0], [0, 1, 0, 1]], np.int32)
NO_POSITIVE = (np.asarray([[0.1, 0.2]], np.float32), np.asarray([[0, 0]], np.int32))


def _present(b):
    return [j for j in range(SCORES.shape[1]) if np.isfinite(SCORES[b, j])]


def hand_decouple(b):
    """Paper Eq. 5: each positive against the negatives only."""
    z = SCORES[b].astype(np.float64) / TAU
    pos = [j for j in _present(b) if LABELS[b, j]]
    neg = [j for j in _present(b) if not LABELS[b, j]]
    terms = [-math.log(math.exp(z[i]) / (math.exp(z[i]) + sum(math.exp(z[j]) for j in neg)))
             for i in pos]
    return sum(terms) / len(terms)


def hand_infonce(b):
    z = SCORES[b].astype(np.float64) / TAU
    every = _present(b)
    pos = [j for j in every if LABELS[b, j]]
    terms = [-math.log(math.exp(z[i]) / sum(math.exp(z[j]) for j in every)) for i in pos]
    return sum(terms) / len(terms)


def hand_bce(b):
    z = SCORES[b].astype(np.float64) / TAU
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    every = _present(b)
    terms = [-math.log(sig(z[j])) if LABELS[b, j] else -math.log(1 - sig(z[j])) for j in every]
    return sum(terms) / len(terms)


@pytest.mark.parametrize("method,hand", [("INFONCE_DECOUPLE", hand_decouple),
                                         ("INFONCE", hand_infonce), ("BCE", hand_bce)])
def test_routing_loss_matches_hand_computation(method, hand):
    loss, ok = routing_loss_terms(SCORES, LABELS, TAU, method)
    want = [hand(b) for b in range(SCORES.shape[0])]
    # float32 logsumexp over <= 4 terms of magnitude <= 4: ~1e-6 relative
    np.testing.assert_allclose(np.asarray(loss), want, rtol=2e-6, atol=1e-6)
    assert np.asarray(ok).tolist() == [True, True]


@pytest.mark.parametrize("method", ["INFONCE_DECOUPLE", "INFONCE", "BCE"])
def test_sample_without_positive_is_undefined(method):
    _, ok = routing_loss_terms(*NO_POSITIVE, TAU, method)
    assert np.asarray(ok).tolist() == [False]


def test_unknown_method_is_named():
    with pytest.raises(ConfigError, match="'HINGE'.*INFONCE_DECOUPLE, INFONCE, BCE"):
        routing_loss_terms(SCORES, LABELS, TAU, "HINGE")
