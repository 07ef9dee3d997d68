"""`init_params(embedding_std=...)`: only the token embedding's scale changes (the other leaves
are drawn from the same stream), on the host and on device; and `msa-jax train`'s recipe key
`model.embedding_init_std` reaches the trainer's fresh parameters."""

import pathlib

import jax
import numpy as np
import pytest

import msa_jax
from msa_jax.errors import ConfigError
from msa_jax.model.params import INIT_STD, init_params
from msa_jax.utils import load_python_file

REPO = pathlib.Path(__file__).resolve().parents[1]
CFG = msa_jax.preset("tiny-msa", vocab_size=64, tie_word_embeddings=False)


def _leaves(params) -> dict:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}


@pytest.mark.parametrize("on_device", [False, True])
def test_only_the_embedding_is_rescaled(on_device):
    base = _leaves(init_params(CFG, 3, on_device=on_device))
    wide = _leaves(init_params(CFG, 3, on_device=on_device, embedding_std=1.0))
    assert sorted(base) == sorted(wide)
    embedding = [n for n in base if "embed_tokens" in n]
    assert len(embedding) == 1, embedding
    for name in base:
        if name in embedding:  # the same draw, scaled by 1.0 / 0.02 (one float32 product)
            np.testing.assert_allclose(wide[name], base[name] * np.float32(1.0 / INIT_STD),
                                       rtol=1e-6)
            assert 0.9 < wide[name].std() < 1.1, wide[name].std()
        else:
            assert np.array_equal(wide[name], base[name]), name


def test_bad_std_is_refused():
    with pytest.raises(ConfigError, match="embedding_std must be > 0"):
        init_params(CFG, embedding_std=0.0)


def test_the_recipe_key_reaches_the_trainer(tmp_path):
    from msa_jax.cli.commands.train import build
    config = load_python_file(str(REPO / "configs/train_tiny.py")).get_config()
    config.model.embedding_init_std = 0.5
    config.eval.every = 0
    config.data.num_queries = 16
    trainer = build(config, str(tmp_path), show_progress=False)
    try:
        leaves = _leaves(trainer.state.params)
        table = [v for n, v in leaves.items() if "embed_tokens" in n][0]
        assert 0.45 < table.std() < 0.55, table.std()
    finally:
        trainer.close()
