"""`msa-jax`: the command-line entry point (absl.app) and its subcommand dispatch.

    msa-jax <command> [--flag=value ...]
    msa-jax help [command]     msa-jax <command> --help     msa-jax --helpfull     msa-jax --version

`run()` is the console script (absl.app.run); `main(argv)` does the work and returns the exit code
(common.EXIT_CODES: 0 ok, 1 bad input reported in one line, 2 bad usage, 3 an internal error,
130 interrupted, 141 output closed early), so tests can call it in-process.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import textwrap
import traceback
from typing import Sequence

from absl import app, flags
from absl import logging as absl_logging

from msa_jax.cli import common
from msa_jax.cli.commands import ask, convert, demo, encode, generate, info, init, smoke, train

PROG = "msa-jax"
COMMANDS = {m.NAME: m for m in (demo, smoke, init, convert, generate, encode, ask, info, train)}
HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull")


def _top_help(full: bool = False) -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} <command> [--flag=value ...]", "",
             "MSA (Memory Sparse Attention) in JAX: convert checkpoints, encode memory banks, "
             "ask questions.", "", "commands:"]
    lines += [f"  {name:<{width}}  {cmd.SUMMARY}" for name, cmd in COMMANDS.items()]
    lines += [f"  {'help':<{width}}  this list; `{PROG} help <command>` for one command", "",
              f"Run `{PROG} <command> --help` for a command's flags; `{PROG} demo` runs the bundled "
              f"trained tiny model, `{PROG} smoke` every stage on a random one (no downloads).",
              "", "exit codes:"]
    lines += [f"  {code:<{width}}  {meaning}" for code, meaning in common.EXIT_CODES]
    text = "\n".join(lines) + "\n"
    if full:
        text += "".join("\n" + _command_help(cmd) for cmd in COMMANDS.values())
    return text


def _flags_for(cmd, argv: Sequence[str]) -> flags.FlagValues:
    fv = flags.FlagValues()
    cmd.define_flags(fv, argv)
    common.define_common_flags(fv)
    return fv


def _command_help(cmd) -> str:
    fv = _flags_for(cmd, [PROG])
    common_names = ("compilation_cache", "verbose", "traceback")
    names = sorted(n for n in fv if fv[n].name == n and n not in common_names)
    lines = [f"usage: {PROG} {cmd.NAME} {cmd.USAGE}", "", cmd.__doc__.strip(), "", "flags:"]
    for name in names + list(common_names):
        flag = fv[name]
        default = "" if flag.default is None else f" (default: {flag.default_as_str})"
        lines += textwrap.wrap(f"--{name}: {flag.help}{default}", 96, initial_indent="  ",
                               subsequent_indent="      ")
    return "\n".join(lines) + "\n"


def _usage_error(cmd_name: str | None, message: str) -> int:
    where = f"{PROG} {cmd_name}" if cmd_name else PROG
    sys.stderr.write(f"{where}: error: {message}\n")
    if cmd_name:
        sys.stderr.write(f"usage: {PROG} {cmd_name} {COMMANDS[cmd_name].USAGE}\n"
                         f"Run `{PROG} {cmd_name} --help` for all flags.\n")
    else:
        sys.stderr.write(f"usage: {PROG} <command> [--flag=value ...]; commands: "
                         f"{', '.join(COMMANDS)}. Run `{PROG} help` for details.\n")
    return common.EXIT_USAGE


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    plain = (ValueError, FileExistsError, FileNotFoundError)
    return text if isinstance(error, plain) else f"{type(error).__name__}: {text}"


def _config_key_error(error: Exception, argv: Sequence[str]) -> str:
    """ml_collections' error for an override of a key the config lacks, as one line."""
    detail = error
    while isinstance(detail, BaseException) and detail.args:
        detail = detail.args[0]
    key, _, hint = str(detail).partition("\n")
    key = key.strip("\"'")
    overrides = [a.split("=", 1)[0] for a in argv if a.startswith("--config.")]
    named = [o for o in overrides if key in o.split(".")] or overrides
    where = f"{named[0]}: " if named else ""
    return f"{where}the config has no key {key!r}" + (f"; {hint}" if hint else "")


def _flag_error(error: Exception) -> str:
    """absl's flag messages, shortened where they are about required or exclusive flags."""
    text = " ".join(str(error).split())
    if m := re.search(r"Flag --(\w+) must have a value other than None", text):
        return f"missing required flag --{m.group(1)}"
    if m := re.search(r"Exactly one of \((.*)\) must have a value other than None", text):
        return "give exactly one of " + ", ".join(f"--{n.strip()}" for n in m.group(1).split(","))
    if m := re.search(r"At most one of \((.*)\) must have a value other than None", text):
        return "give at most one of " + ", ".join(f"--{n.strip()}" for n in m.group(1).split(","))
    return re.sub(r"^flags [^:]*: ", "", text)  # a multi-flag validator names all its flags


def _help(name: str, rest: Sequence[str]) -> int:
    """`help`, `help <command>`, `--help`, `--helpfull`."""
    if name == "help" and rest:
        if rest[0] not in COMMANDS:
            return _usage_error(None, f"unknown command {rest[0]!r}")
        sys.stdout.write(_command_help(COMMANDS[rest[0]]))
    else:
        sys.stdout.write(_top_help(full=name == "--helpfull"))
    return common.EXIT_OK


def _parse(cmd, argv: Sequence[str]):
    """(flag values, --config or None) of a command; raises UsageError on bad flags."""
    try:
        fv = _flags_for(cmd, argv)
        leftover = fv(argv)
    except flags.Error as e:
        raise common.UsageError(_flag_error(e)) from None
    except (AttributeError, KeyError) as e:  # ml_collections: an override of an unknown key
        raise common.UsageError(_config_key_error(e, argv)) from None
    if len(leftover) > 1:
        raise common.UsageError(f"unexpected arguments {leftover[1:]} (flags are --name=value)")
    return fv, common.loaded_config(fv)


def main(argv: Sequence[str]) -> int:
    """Run `msa-jax` with argv = [program, command, flags...]; returns the exit code."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return status
    except BrokenPipeError:  # `msa-jax info ... | head`: the reader has gone, nothing to report
        _silence_stdout()
        return common.EXIT_BROKEN_PIPE


def _silence_stdout():
    """Point stdout at /dev/null so that the interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (captured in tests)
        pass


def _error(name: str, error: BaseException, show_traceback: bool, internal: bool) -> int:
    """Report an error in one line (and the traceback with --traceback); returns the exit code."""
    if show_traceback:
        traceback.print_exception(error)
    if not internal:
        sys.stderr.write(f"{PROG} {name}: error: {_one_line(error)}\n")
        return common.EXIT_ERROR
    hint = "" if show_traceback else "; rerun with --traceback for the traceback"
    sys.stderr.write(f"{PROG} {name}: internal error (a bug in msa-jax, please report it): "
                     f"{type(error).__name__}: {' '.join(str(error).split())}{hint}\n")
    return common.EXIT_INTERNAL


def _main(argv: Sequence[str]) -> int:
    if len(argv) < 2:
        return _usage_error(None, "no command given")
    name, rest = argv[1], list(argv[2:])
    if name in ("help",) + HELP_FLAGS:
        return _help(name, rest)
    if name == "--version":
        import msa_jax

        print(f"{PROG} {msa_jax.__version__}")
        return common.EXIT_OK
    if name not in COMMANDS:
        if name.startswith("-"):
            return _usage_error(None, "flags come after the command")
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return _usage_error(None, f"unknown command {name!r}{hint}")
    cmd = COMMANDS[name]
    if any(a in HELP_FLAGS for a in rest):
        sys.stdout.write(_command_help(cmd))
        return common.EXIT_OK
    try:
        fv, config = _parse(cmd, [f"{PROG} {name}"] + rest)
    except common.UsageError as e:
        return _usage_error(name, str(e))
    absl_logging.set_verbosity(absl_logging.INFO if fv.verbose else absl_logging.WARNING)
    try:
        common.enable_compilation_cache(fv.compilation_cache)
        if getattr(cmd, "USES_CPU_CORES", False):  # encoding spreads its blocks over them
            common.use_cpu_cores()
        status = cmd.execute(fv, config)
    except common.UsageError as e:
        return _usage_error(name, str(e))
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG} {name}: interrupted\n")
        return common.EXIT_INTERRUPTED
    except BrokenPipeError:
        raise
    except common.LIBRARY_ERRORS as e:
        return _error(name, e, fv.traceback, internal=False)
    except Exception as e:  # noqa: BLE001  anything else is a bug, not bad input
        return _error(name, e, fv.traceback, internal=True)
    return common.EXIT_OK if status is None else int(status)


def _parse_absl(argv: Sequence[str]) -> list[str]:
    """absl.app's flags_parser: command flags are parsed by `main`; absl's own only need to count
    as parsed."""
    flags.FLAGS.mark_as_parsed()
    return list(argv)


def run():
    """Console-script entry point (setup.py: msa-jax=msa_jax.cli.main:run)."""
    app.run(main, flags_parser=_parse_absl)


if __name__ == "__main__":
    run()
