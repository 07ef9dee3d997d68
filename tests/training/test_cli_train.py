"""`msa-jax train`: bad recipe settings and bad samples files fail before any compilation, with
a one-line error naming the key or the sample (exit 1: bad input, not an internal error)."""

import json

import pytest

from msa_jax.cli.main import main


@pytest.mark.parametrize("override,code,named", [
    ("--config.optim.main.decay=exp", 1, "optim.main.decay='exp'"),
    ("--config.optim.warmup.warmup_steps=99", 1, "optim.warmup.warmup_steps"),
    ("--config.model.vocab_size=100", 2, "vocab_size=100 is smaller than the tokenizer's 263"),
    ("--config.model.preset=tiny", 2, "preset='tiny' has no MSA router layers"),
    ("--config.data.batch_size=0", 1, "data.batch_size must be >= 1"),
    ("--config.optim.freeze=all", 1, "optim.freeze='all'"),
    ("--config.data.hops=3", 1, "hops must be 1 or 2, got 3"),
    ("--config.data.hard_negatives=5", 1, "docs_per_sample=4 cannot hold a chain of 1"),
    ("--config.data.length_buckets=(64,)", 1, "do not fit the largest length bucket 64"),
    ("--config.data.doc_buckets=(2,)", 1, "4 documents exceed the largest document bucket 2"),
    ("--config.data.length_buckets=(1280,1024)", 1, "Buckets.lengths must be positive"),
    ("--config.train.keep=0", 1, "train.keep must be >= 1"),
    ("--config.train.log_every=0", 1, "log_every must be >= 1"),
    ("--config.model.aux_loss_method=HINGE", 1, "aux_loss_method 'HINGE'"),
    ("--config.data.kinds=('reply',)", 2, "expected a non-empty subset of ('retrieve', 'answer')"),
    ("--config.data.kinds=('answer',)", 2, "keeps none of the samples (answer steps need"),
])
def test_bad_settings_are_named(tmp_path, capsys, override, code, named):
    rc = main(["msa-jax", "train", "--config=configs/train_tiny.py", f"--workdir={tmp_path}",
               override, "--compilation_cache="])
    err = capsys.readouterr().err
    assert rc == code, err
    assert named in err
    if code == 1:  # bad input: one line (usage errors, code 2, add the usage line)
        assert len(err.strip().splitlines()) == 1, err


def test_missing_init_from_is_named(tmp_path, capsys):
    rc = main(["msa-jax", "train", f"--workdir={tmp_path}", f"--init_from={tmp_path}/nope",
               "--compilation_cache="])
    assert rc == 1
    assert "nope: no such --init_from checkpoint folder" in capsys.readouterr().err


def _sample(ident: str, relevant: str) -> dict:
    return {"id": ident, "documents": [{"id": "d0", "text": "Ann lives in Oslo."},
                                       {"id": "d1", "text": "Bob lives in Rome."}],
            "question": "Where does Ann live?", "relevant_ids": [relevant]}


@pytest.mark.parametrize("lines,named", [
    ([_sample("q0", "d0"), _sample("q1", "d7")],
     "line 2: sample 'q1': relevant id(s) ['d7'] are not among its documents"),
    (["{not json"], "line 1: malformed JSON"),
    ([{**_sample("q0", "d0"), "documents": []}], "sample 'q0' has no documents"),
])
def test_bad_samples_file_is_named(tmp_path, capsys, lines, named):
    path = tmp_path / "samples.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    rc = main(["msa-jax", "train", "--config=configs/train_tiny.py", f"--workdir={tmp_path}/w",
               f"--config.data.samples={path}", "--compilation_cache="])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert len(err.strip().splitlines()) == 1, err
    assert "samples.jsonl" in err and named in err, err
