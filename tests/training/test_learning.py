"""Learning: a short run on the keyed retrieval task (tests/training/batches.py) in which router
recall@1 among a held-out memory of 64 unseen documents rises far above chance (1/64) and the LM
loss falls. Margins, not exact numbers: a run on this CPU reaches recall@1 ~0.4 and an LM loss
~4.8 from ~6.2 in 120 steps."""

import dataclasses

import numpy as np
import pytest

from msa_jax.config import preset
from msa_jax.inference.memory_generate import ROUTING, QueryRow
from msa_jax.memory.encoder import DocInput
from msa_jax.training import optim
from msa_jax.training.evaluate import EvalQuestion, evaluate
from msa_jax.training.metrics import read_jsonl
from msa_jax.training.step import data_mesh
from msa_jax.training.trainer import Trainer
from tests.training.batches import keyed_batch

_TINY = preset("tiny-msa")
CFG = _TINY.replace(num_layers=2, kernel_implementation="xla", msa=dataclasses.replace(
    _TINY.msa, router_layers=(1,), top_k_docs=2, inference_score_mode="cosine"))
DOCS, MEMORY, STEPS = 8, 64, 120


def held_out_memory(n: int, seed: int = 99):
    """n unseen documents (another seed than training) and one question per document: its key."""
    x = keyed_batch(CFG, np.random.default_rng(seed), 1, n)
    tokens, roles = x["tokens"][0], x["roles"][0]
    docs = [DocInput(str(d), tuple(int(t) for t in tokens[roles == d])) for d in range(1, n + 1)]
    questions = [EvalQuestion(QueryRow(d.tokens[:2], (ROUTING, ROUTING)), d.id) for d in docs]
    return docs, questions


@pytest.mark.slow
@pytest.mark.single_leg
def test_router_recall_rises_and_lm_loss_falls(tmp_path):
    def data(start):
        for i in range(start, 10 ** 9):
            yield keyed_batch(CFG, np.random.default_rng([1, i]), 8, DOCS)

    ocfg = optim.OptimConfig(phases=(optim.Phase(steps=STEPS, lr=3e-3, warmup_steps=10,
                                                 aux_weight=1.0),))
    trainer = Trainer(CFG, ocfg, data, str(tmp_path), mesh=data_mesh(1), show_progress=False,
                      tensorboard=False, checkpoint_every=10 ** 6, log_every=1)
    docs, questions = held_out_memory(MEMORY)
    before = evaluate(CFG, trainer.state.params, docs, questions)["eval/recall@1"]
    trainer.run()
    trainer.close()
    after = evaluate(CFG, trainer.state.params, docs, questions)["eval/recall@1"]
    chance = 1 / MEMORY
    assert after >= 8 * chance and after >= before + 0.1, (before, after)
    lm = [r["lm_loss"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"))]
    assert np.mean(lm[-10:]) < np.mean(lm[:10]) - 0.3, (lm[:10], lm[-10:])
