"""`msa-jax train`: bad recipe settings fail before any compilation, with a one-line error
naming the key."""

import pytest

from msa_jax.cli.main import main


@pytest.mark.parametrize("override,code,named", [
    ("--config.optim.main.decay=exp", 1, "optim.main.decay='exp'"),
    ("--config.optim.warmup.warmup_steps=99", 1, "optim.warmup.warmup_steps"),
    ("--config.model.vocab_size=100", 2, "vocab_size=100 is smaller than the byte tokenizer"),
    ("--config.model.preset=tiny", 2, "preset='tiny' has no MSA router layers"),
    ("--config.data.batch_size=0", 1, "data.batch_size must be >= 1"),
    ("--config.optim.freeze=all", 1, "optim.freeze='all'"),
])
def test_bad_settings_are_named(tmp_path, capsys, override, code, named):
    rc = main(["msa-jax", "train", "--config=configs/train_tiny.py", f"--workdir={tmp_path}",
               override, "--compilation_cache="])
    err = capsys.readouterr().err
    assert rc == code, err
    assert named in err


def test_missing_init_from_is_named(tmp_path, capsys):
    rc = main(["msa-jax", "train", f"--workdir={tmp_path}", f"--init_from={tmp_path}/nope",
               "--compilation_cache="])
    assert rc == 1
    assert "nope: no such --init_from checkpoint folder" in capsys.readouterr().err
