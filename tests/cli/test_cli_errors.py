"""Usage errors exit 2 with a usage line, library errors exit 1 with one line; no tracebacks.

Most cases call `main(argv)` in-process (nothing here compiles); two go through the real entry
point (`python -m msa_jax.cli.main`, i.e. absl.app.run) to check the exit codes there.
"""

import json

import pytest

import msa_jax
from msa_jax.cli import main as cli_main

COMMANDS = ["demo", "smoke", "init", "convert", "generate", "encode", "ask", "info", "train"]


def call(capsys, *args):
    code = cli_main.main(["msa-jax", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, message", [
    ([], "no command given"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["asl"], "did you mean 'ask'"),
    (["--model=x"], "flags come after the command"),
    (["ask", "--bank=b", "--question=q"], "missing required flag --model"),
    (["ask", "--model=m", "--bank=b"], "give exactly one of --question, --queries"),
    (["convert", "--src=a", "--dst=b", "--router_layers=1", "--msa_preset=msa-4b"],
     "give at most one of --msa_preset, --router_layers"),
    (["generate", "--model=m", "--prompt=x", "--bogus=1"], "bogus"),
    (["generate", "--model=m", "--prompt=x", "stray"], "unexpected arguments ['stray']"),
    (["generate", "--model=m", "--prompt=x", "--top_p=3"], "--top_p=3"),
    (["generate", "--model=m", "--prompt_ids=a,b"], "comma-separated integers"),
    (["info"], "give --model=DIR, --bank=BANK_DIR or both"),
    (["demo", "--config=no/such/config.py"], "cannot load config file no/such/config.py"),
    (["demo", "--config.modle=x"], "--config.modle: the config has no key"),
    (["demo", "--config.memory_tokens=many"], "--config.memory_tokens=many"),
    (["smoke", "--config.modle.dtype=bfloat16"], "--config.modle.dtype: the config has no key"),
    (["smoke", "--config.model.num_layers=two"], "--config.model.num_layers=two"),
])
def test_usage_errors(capsys, args, message):
    code, out, err = call(capsys, *args)  # all fail while parsing, before any JAX work
    assert code == 2, err
    assert message in err.splitlines()[0], err
    assert "usage: msa-jax" in err and "Traceback" not in err and out == ""


def _bad_checkpoint(tmp_path):
    path = tmp_path / "ckpt"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    return path


@pytest.mark.parametrize("case", ["no_dir", "bad_config", "convert_bad", "no_bank", "no_corpus"])
def test_library_errors_are_one_line(capsys, tmp_path, case):
    bad = _bad_checkpoint(tmp_path)
    args, message = {
        "no_dir": (["generate", f"--model={tmp_path / 'nope'}", "--prompt=hi"],
                   "no such checkpoint folder"),
        "bad_config": (["generate", f"--model={bad}", "--prompt=hi"], "config.json lacks"),
        "convert_bad": (["convert", f"--src={bad}", f"--dst={tmp_path / 'out'}"],
                        "config.json lacks"),
        "no_bank": (["info", f"--bank={tmp_path / 'nope'}"], "no such memory bank folder"),
        "no_corpus": (["encode", f"--model={bad}", f"--corpus={tmp_path / 'c.jsonl'}",
                       f"--out={tmp_path / 'bank'}"], "no such file"),
    }[case]
    code, out, err = call(capsys, *args, "--compilation_cache=")
    assert code == 1, err
    assert len(err.splitlines()) == 1 and err.startswith(f"msa-jax {args[0]}: error: "), err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_traceback_flag_shows_the_traceback(capsys, tmp_path):
    code, _, err = call(capsys, "info", f"--bank={tmp_path}", "--traceback", "--compilation_cache=")
    assert code == 1 and "Traceback" in err and err.rstrip().splitlines()[-1].startswith("msa-jax")


def test_help_lists_every_command(capsys):
    for args in (["help"], ["--help"], ["--helpfull"]):
        code, out, _ = call(capsys, *args)
        assert code == 0
        for name in COMMANDS:
            assert f"\n  {name} " in out
    code, out, _ = call(capsys, "--helpfull")
    assert all(f"usage: msa-jax {name} " in out for name in COMMANDS)
    assert call(capsys, "--version")[:2] == (0, f"msa-jax {msa_jax.__version__}\n")


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help(capsys, name):
    for args in ([name, "--help"], ["help", name]):
        code, out, _ = call(capsys, *args)
        assert code == 0
        assert out.startswith(f"usage: msa-jax {name} ")
        assert "--compilation_cache" in out


def test_entry_point_exit_codes(cli, tmp_path):
    result = cli("frobnicate")
    assert result.returncode == 2 and "unknown command" in result.stderr
    result = cli("info", f"--model={tmp_path / 'nope'}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"msa-jax info: error: {tmp_path / 'nope'}: no such checkpoint folder"]
