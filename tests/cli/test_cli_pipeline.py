"""Every subcommand end to end on tiny random models, through the real entry point (subprocess).

One `msa-jax smoke` run (session fixture) provides the checkpoints, corpus, queries and bank the
other commands use; they pass --dtype=float32 (or configs/tiny.py) to compute as the demo did, so
the session's compilation cache serves most of their JIT compilation.
"""

import json

import numpy as np
import pytest

from tests.cli.conftest import REPO

pytestmark = pytest.mark.slow
TINY = f"--config={REPO / 'configs' / 'tiny.py'}"


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_demo(demo):
    out = demo.stdout
    assert "RANDOMLY INITIALISED" in out and "gibberish" in out
    for step in range(1, 7):
        assert f"[{step}/6]" in out
    assert "without Memory Interleave" in out and "with Memory Interleave" in out
    assert "layer  0: [" in out and "layer  1: [" in out  # routed documents per router layer
    assert "bytes/memory token" in out and "routing recall@4" in out
    for name in ("qwen3-random", "qwen3-random-bfloat16", "msa-random"):
        assert {"config.json", "msa_tokenizer.json"} <= {p.name for p in demo[name].iterdir()}
    assert (demo["bank"] / "manifest.json").exists() and not demo["encode-journal"].exists()
    answers = json.loads(demo["answers.json"].read_text())["questions"]
    assert len(answers) == 4 and {a["interleave"] for a in answers} == {False, True}
    assert all(len(a["routing"]) == 2 for a in answers)


def test_info(cli, demo):
    out = ok(cli("info", f"--model={demo['msa-random']}", f"--bank={demo['bank']}"))
    assert "router       layers 0,1; pooling P=8; top-k 4" in out
    assert "16 documents" in out and "bytes/memory token" in out and "compatible   yes" in out


def test_convert_upgrades_and_refuses_to_overwrite(cli, demo, tmp_path):
    dst = tmp_path / "up"
    out = ok(cli("convert", f"--src={demo['qwen3-random']}", f"--dst={dst}", "--router_layers=0,1",
                 "--pooling_size=8", "--top_k=2", "--dtype=bfloat16"))
    assert "Qwen3 -> MSA" in out and "msa_tokenizer.json" in out
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16" and cfg["msa_config"]["router_layer_idx"] == "0,1"
    assert cfg["msa_config"]["top_k_docs"] == 2
    again = cli("convert", f"--src={demo['qwen3-random']}", f"--dst={dst}", "--router_layers=0")
    assert again.returncode == 1 and "exists" in again.stderr


def test_convert_takes_msa_settings_from_config(cli, demo, tmp_path):
    dst = tmp_path / "up"
    ok(cli("convert", f"--src={demo['qwen3-random']}", f"--dst={dst}", TINY,
           "--config.msa.router_layers=1", "--config.msa.top_k_docs=3"))
    msa = json.loads((dst / "config.json").read_text())["msa_config"]
    assert (msa["router_layer_idx"], msa["top_k_docs"], msa["pooling_kernel_size"]) == ("1", 3, 8)


def test_init_and_info(cli, tmp_path):
    out = ok(cli("init", "--preset=tiny-msa", f"--out={tmp_path / 'm'}", "--seed=1",
                 "--vocab_size=263"))
    assert "RANDOM tiny-msa" in out
    assert {p.name for p in (tmp_path / "m").iterdir()} == {
        "config.json", "model.safetensors", "msa_tokenizer.json"}
    out = ok(cli("info", f"--model={tmp_path / 'm'}"))
    assert "4 layers" in out and "ByteTokenizer (263 ids)" in out
    assert "router       layers 2,3" in out


def test_generate(cli, demo):
    model = f"--model={demo['qwen3-random-bfloat16']}"
    result = cli("generate", model, "--dtype=float32", "--prompt=The lucky boat of",
                 "--max_new_tokens=16")
    assert ok(result).strip() and "16 new tokens at most, greedy" in result.stderr
    # --config sets the defaults and an explicit flag wins; token ids in, token ids out
    result = cli("generate", model, TINY, "--config.generation.temperature=0.5",
                 "--prompt_ids=" + ",".join(["40"] * 17), "--temperature=0.7", "--seed=1")
    ids = ok(result).splitlines()[0].split(",")
    assert 1 <= len(ids) <= 16 and all(i.isdigit() for i in ids)
    assert "16 new tokens at most, temperature 0.7" in result.stderr


def test_encode_resumes_from_its_journal(cli, demo, tmp_path):
    import msa_jax

    args = ["encode", f"--model={demo['msa-random']}", f"--corpus={demo['corpus.jsonl']}", TINY,
            f"--journal={tmp_path / 'journal'}", "--block_tokens=512"]
    out = ok(cli(*args, f"--out={tmp_path / 'b1'}"))
    assert "16 documents" in out and "bytes/memory token" in out
    blocks = sorted((tmp_path / "journal").glob("block_*.npz"))
    assert len(blocks) > 1
    blocks[-1].unlink()  # as if interrupted before the last block was committed
    kept = {p: p.stat().st_mtime_ns for p in blocks[:-1]}
    ok(cli(*args, f"--out={tmp_path / 'b2'}"))
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # reused, not re-encoded
    b1, b2 = (msa_jax.load_bank(str(tmp_path / b)) for b in ("b1", "b2"))
    assert b1.doc_ids == b2.doc_ids
    for tier in ("routing_keys", "content_k", "content_v"):  # bit-equal: the same plan and
        np.testing.assert_array_equal(b1.tier(tier), b2.tier(tier))  # program (block_tokens 512)
    again = cli(*args, f"--out={tmp_path / 'b1'}")
    assert again.returncode == 1 and "exists" in again.stderr


def test_ask_query_file_with_recall_and_json(cli, demo, tmp_path):
    out = ok(cli("ask", f"--model={demo['msa-random']}", f"--bank={demo['bank']}",
                 f"--queries={demo['queries.jsonl']}", "--nointerleave", "--dtype=float32",
                 "--answer_tokens=16", f"--json_out={tmp_path / 'a.json'}"))
    assert "without Memory Interleave" in out and "routing recall@4 over 2 questions" in out
    records = json.loads((tmp_path / "a.json").read_text())["questions"]
    assert len(records) == 2
    for r in records:
        assert [layer["layer"] for layer in r["routing"]] == [0, 1]
        assert all(len(layer["documents"]) == 4 for layer in r["routing"])
        assert 0.0 <= r["recall"]["union"] <= 1.0


def test_ask_one_question_with_interleave(cli, demo):
    out = ok(cli("ask", f"--model={demo['msa-random']}", f"--bank={demo['bank']}",
                 "--question=What is the red boat of Hana I. Adler?", "--dtype=float32",
                 "--max_rounds=2", "--max_new_tokens=16", "--answer_tokens=16"))
    assert "with Memory Interleave" in out and "round 1:" in out and "answer:" in out
    assert "top-4 per router layer" in out


def test_ask_with_ids_constrained_to_the_routed_documents(cli, demo, tmp_path):
    out = ok(cli("ask", f"--model={demo['msa-random']}", f"--bank={demo['bank']}",
                 "--question=What is the red boat of Hana I. Adler?", "--dtype=float32",
                 "--max_rounds=2", "--max_new_tokens=16", "--answer_tokens=8", "--constrain_ids",
                 f"--json_out={tmp_path / 'c.json'}"))
    assert "round 1:" in out
    rounds = json.loads((tmp_path / "c.json").read_text())["questions"][0]["rounds"]
    injected = set()
    for r in rounds:  # each round wrote one routed, new document's id, or ended retrieval
        routed = {d for layer in r["routing"] for d in layer["documents"]} - injected
        assert r["generated"] in {f"[{d}]<|object_ref_end|>" for d in routed} | {
            "<End-of-Retrieve>"}, r
        injected.update(r["injected_ids"])
