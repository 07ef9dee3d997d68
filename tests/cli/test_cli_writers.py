"""The CLI side of issue 9 §2 and §4: `ask` refuses a bank of another model; `encode` locks its
--out (a second run stops at once, naming the first's pid); a run killed inside the
--overwrite swap is recovered by the next command; impossible outputs fail before the compute."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import msa_jax
from msa_jax.atomic import PAUSE_AT_SWAP, leftovers
from tests.memory.test_fingerprint import DOCS, VARIANTS, tiny_model, with_one_change


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Checkpoint A, a corpus, and A's bank (written through the API)."""
    root = tmp_path_factory.mktemp("cli-writers")
    model = tiny_model()
    model.save_pretrained(str(root / "model"))
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in DOCS.items()))
    msa_jax.save_bank(model.encode_memory(DOCS, progress=False), str(root / "bank"))
    return root, model


@pytest.mark.parametrize("what", ["v_proj of layer 0", "the embedding"])
def test_ask_refuses_a_bank_of_another_model(cli, files, tmp_path, what):
    root, model = files
    with_one_change(model, VARIANTS[what]).save_pretrained(str(tmp_path / "other"))
    result = cli("ask", f"--model={tmp_path / 'other'}", f"--bank={root / 'bank'}",
                 "--question=What colour is the sky?", "--nointerleave", "--answer_tokens=2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "memory bank was made by another model" in result.stderr


def _encode_args(root, out):
    return ["encode", f"--model={root / 'model'}", f"--corpus={root / 'corpus.jsonl'}",
            f"--out={out}", "--block_tokens=64"]


def test_encode_locks_its_output_and_a_killed_swap_is_recovered(cli, cli_env, files, tmp_path):
    root, _ = files
    out, ready = tmp_path / "bank", tmp_path / "ready"
    assert cli(*_encode_args(root, out)).returncode == 0
    env = dict(cli_env, **{PAUSE_AT_SWAP: str(ready)})
    first = subprocess.Popen([sys.executable, "-m", "msa_jax.cli.main",
                              *_encode_args(root, out), "--overwrite"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    try:
        while not ready.exists():
            if first.poll() is not None:
                pytest.fail(f"encode finished without pausing at the swap:\n{first.stdout.read()}")
            assert time.monotonic() < deadline, "encode did not reach the swap in time"
            time.sleep(0.2)
        second = cli(*_encode_args(root, out))
        assert second.returncode == 1
        assert f"{out} is in use by another writer (pid {first.pid}" in second.stderr
        assert "encoding" not in second.stdout  # stopped before loading anything
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not out.exists() and len(leftovers(str(out))) == 2
    info = cli("info", f"--bank={out}")  # the next open finishes the interrupted replacement
    assert info.returncode == 0, info.stdout + info.stderr
    assert out.exists() and leftovers(str(out)) == []


@pytest.mark.parametrize("command", ["encode", "init", "convert"])
def test_an_impossible_output_fails_before_the_compute(cli, files, tmp_path, command):
    root, _ = files
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "out"
    args = {"encode": _encode_args(root, out), "init": ["init", f"--out={out}"],
            "convert": ["convert", f"--src={root / 'model'}", f"--dst={out}"]}[command]
    result = cli(*args)
    assert result.returncode == 1
    assert f"cannot write {out}: its folder {blocker} is missing, not a folder" in result.stderr
    assert result.stdout == ""  # nothing was encoded, initialised or converted
    assert os.listdir(tmp_path) == ["a-file"]
