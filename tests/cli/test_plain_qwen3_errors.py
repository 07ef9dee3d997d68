"""A plain Qwen3 model (no router layers) asked to encode or read memory gets one clear error that
names the model and how to upgrade it, in the API and in the CLI."""

import pytest

import msa_jax
from tests.models import byte_model
from tests.cli.conftest import REPO

UPGRADE = "msa-jax convert"


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("plain") / "qwen3"
    return byte_model("tiny").save_pretrained(str(path))


@pytest.fixture(scope="module")
def msa_bank():
    return byte_model().encode_memory({"a": "some text"}, progress=False)


def test_api_names_the_plain_model_and_the_upgrade(plain_dir, msa_bank):
    plain = msa_jax.from_pretrained(plain_dir)
    calls = [lambda: plain.encode_memory(["a document"], progress=False),
             lambda: plain.ask("what?", msa_bank),
             lambda: plain.ask("what?", msa_bank, interleave=False),
             lambda: plain.ask_tokens([], msa_bank)]
    for call in calls:
        with pytest.raises(msa_jax.BankError, match="plain Qwen3 model") as e:
            call()
        assert str(plain_dir) in str(e.value) and UPGRADE in str(e.value)
        assert "router_layers" in str(e.value)


def test_cli_encode_and_ask_name_the_plain_model(plain_dir, tmp_path, cli):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "some text"}\n')
    for args in (["encode", f"--model={plain_dir}", f"--corpus={corpus}",
                  f"--out={tmp_path / 'bank'}"],
                 ["ask", f"--model={plain_dir}", f"--bank={tmp_path / 'bank'}", "--question=q"]):
        r = cli(*args, cwd=REPO)
        assert r.returncode == 1, r.stdout + r.stderr
        line = r.stderr.strip().splitlines()[-1]
        assert "plain Qwen3 model" in line and str(plain_dir) in line and UPGRADE in line, line
