"""Bad input to `msa-jax` gets a one-line error naming it; a bug gets another message and exit
code (issue 9 §3). In-process `main(argv)` calls, refused before any JAX work, unless named."""

import json
import subprocess
import sys

import pytest

from msa_jax.cli import common
from msa_jax.cli import main as cli_main
from msa_jax.errors import BankError

from tests.cli.conftest import REPO

TINY = f"--config={REPO / 'configs' / 'tiny.py'}"
MSA_4B = f"--config={REPO / 'configs' / 'msa_4b.py'}"


def call(capsys, *args):
    code = cli_main.main(["msa-jax", *args, "--compilation_cache="])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, message", [
    # --config values pass the same bounds as the flags (today they skip them)
    (["generate", "--model=m", "--prompt=x", TINY, "--config.generation.max_new_tokens=-5"],
     "--config.generation.max_new_tokens=-5: must be >= 1"),
    (["generate", "--model=m", "--prompt=x", TINY, "--config.generation.top_p=0.0"],
     "--config.generation.top_p=0.0: must be > 0.0"),
    (["generate", "--model=m", "--prompt=x", TINY, "--config.generation.temperature=nan"],
     "--config.generation.temperature=nan: expected a finite number"),
    (["ask", "--model=m", "--bank=b", "--question=q", MSA_4B, "--config.msa.top_k_docs=0"],
     "--config.msa.top_k_docs=0: must be >= 1"),
    (["ask", "--model=m", "--bank=b", "--question=q", TINY, "--config.ask.answer_tokens=0"],
     "--config.ask.answer_tokens=0: must be >= 1"),
    (["demo", "--config.ask.max_rounds=0"], "--config.ask.max_rounds=0: must be >= 1"),
    # and the flags refuse what the library cannot take (today NaN passes, and top_p=0 reaches
    # the sampler as a ValueError)
    (["generate", "--model=m", "--prompt=x", "--temperature=nan"],
     "--temperature=nan: expected a finite number"),
    (["generate", "--model=m", "--prompt=x", "--top_p=0"], "--top_p=0.0: must be > 0.0"),
    (["ask", "--model=m", "--bank=b", "--question=q", "--temperature=inf"],
     "--temperature=inf: expected a finite number"),
])
def test_config_values_and_flags_share_one_validation(capsys, args, message):
    code, out, err = call(capsys, *args)
    assert code == common.EXIT_USAGE, err
    assert message in err.splitlines()[0], err
    assert "Traceback" not in err


def _raising(error):
    def execute(fv, config):
        raise error
    return execute


@pytest.mark.parametrize("error, code, message", [
    (BankError("bank/bank.json: bad"), common.EXIT_ERROR,
     "msa-jax info: error: bank/bank.json: bad"),
    (FileNotFoundError("x: no such file"), common.EXIT_ERROR, "msa-jax info: error: x: no such"),
    # a ValueError that is not an MSAError is a bug (e.g. JAX's shape errors), not bad input
    (ValueError("Incompatible shapes for broadcasting: (2, 3) and (4,)"), common.EXIT_INTERNAL,
     "msa-jax info: internal error (a bug in msa-jax, please report it): ValueError: "
     "Incompatible shapes"),
    (KeyError("routing_keys"), common.EXIT_INTERNAL, "internal error (a bug in msa-jax"),
])
def test_user_errors_and_internal_errors_differ(capsys, monkeypatch, error, code, message):
    monkeypatch.setattr(cli_main.COMMANDS["info"], "execute", _raising(error))
    got, out, err = call(capsys, "info", "--bank=b")
    assert got == code, err
    assert len(err.splitlines()) == 1 and message in err, err
    assert ("--traceback" in err) == (code == common.EXIT_INTERNAL)


def test_help_documents_the_exit_codes(capsys):
    code = cli_main.main(["msa-jax", "help"])
    out = capsys.readouterr().out
    assert code == 0
    for number, meaning in common.EXIT_CODES:
        assert f"  {number:<8}  {meaning}" in out  # 8 = width of the longest command name
    assert "3         internal error" in out


def test_a_closed_pipe_is_not_a_traceback(cli_env):
    # `msa-jax help | head -0`: the reader is gone before anything is written
    proc = subprocess.Popen([sys.executable, "-m", "msa_jax.cli.main", "help"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == common.EXIT_BROKEN_PIPE, err
    assert err == "", err


def test_query_file_errors_name_the_file(capsys, tmp_path):
    path = tmp_path / "q.json"
    path.write_text("[" * 100_000 + "]" * 100_000)  # deeply nested: RecursionError today
    code, _, err = call(capsys, "ask", "--model=m", "--bank=b", f"--queries={path}")
    assert code == common.EXIT_ERROR and len(err.splitlines()) == 1, err
    assert f"{path}: nested too deeply" in err
    # an integer of 5,000 digits: Python's int() refuses it, a ValueError today
    path.write_text('[{"query": "q", "reference_list": [' + "9" * 5000 + "]}]")
    code, _, err = call(capsys, "ask", "--model=m", "--bank=b", f"--queries={path}")
    assert code == common.EXIT_ERROR and f"{path}" in err and "digits" in err, err


def test_query_references_missing_from_the_bank_are_named(capsys, monkeypatch, tmp_path):
    # Today: recall is computed over ids the bank cannot hold, and 0.00 reads as a real result.
    import msa_jax
    from msa_jax.inference.interleave import Answer
    from msa_jax.inference.memory_generate import LayerChoice

    class Bank:
        doc_ids = ["a", "b", None]  # None: a deleted slot
        num_docs = 2

    class Model:
        cfg, tokenizer = msa_jax.preset("tiny-msa", msa=msa_jax.MSAConfig(top_k_docs=1)), object()

        def require_msa(self, action):
            pass  # an MSA model

        def ask(self, question, bank, **kwargs):
            return Answer("x", [], [LayerChoice(0, ["a"], [1.0])])

    monkeypatch.setattr(common, "load_model", lambda *a, **k: Model())
    monkeypatch.setattr(common, "load_bank", lambda *a, **k: Bank())
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"query": "q", "reference_list": ["a", "zz"]}\n'
                       '{"query": "r", "reference_list": ["yy"]}\n')
    code, out, err = call(capsys, "ask", "--model=m", "--bank=b", f"--queries={queries}",
                          "--nointerleave")
    assert code == 0, err
    assert ("msa-jax ask: warning: 2 reference id(s) of 2 query(ies) are not in the bank b, and "
            "are left out of the recall: query '0': 'zz'; query '1': 'yy'") in err
    assert "routing recall@1 over 1 questions: 1.00" in out


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A tiny random MSA checkpoint with the byte tokenizer (263 ids) and 4,096 positions."""
    from tests.models import byte_model

    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    byte_model().save_pretrained(str(path))
    return path


@pytest.mark.parametrize("record, message", [
    # today: a NaN bank (also for document "a", in the same block), then `ask` answers <|pad|>
    ({"id": "b", "tokens": [10, 263, 12]},
     "document 'b' (#1): token id 263 at position 1 is outside the model's vocabulary 0..262"),
    # today: one block of a million tokens (16 GB), or a hang at 100K characters
    ({"id": "b", "text": "x" * 1_000_000}, "document 'b' (#1) has 1,000,0"),
    ({"id": "b", "text": "y" * 5_000}, "document 'b' (#1, 5,010 tokens) needs 5,010 positions, "
                                       "more than the model's max_position_embeddings of 4,096"),
])
def test_encode_refuses_documents_the_model_cannot_read(capsys, tmp_path, tiny_ckpt, record,
                                                        message):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "a", "tokens": [10, 11, 12]}) + "\n"
                      + json.dumps(record) + "\n")
    code, out, err = call(capsys, "encode", f"--model={tiny_ckpt}", f"--corpus={corpus}",
                          f"--out={tmp_path / 'bank'}", "--noprogress")
    assert code == common.EXIT_ERROR, err
    assert err.startswith(f"msa-jax encode: error: {message}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bank").exists()


def test_generate_refuses_a_prompt_that_does_not_fit(capsys, tiny_ckpt):
    code, _, err = call(capsys, "generate", f"--model={tiny_ckpt}", "--prompt_ids=5,6,7",
                        "--max_new_tokens=4094")
    assert code == common.EXIT_ERROR, err
    assert "prompt 0 (3 tokens) + max_new_tokens 4,094 needs 4,097 positions" in err
