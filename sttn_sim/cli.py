"""The command line: one ``sttn`` command with subcommands, and the one error handler.

Every command is a module with ``DESCRIPTION``, ``add_arguments(parser)`` and
``run(args) -> int``; it is reachable as ``sttn NAME …`` (the console command of
:mod:`analysis.cli`, which adds the application's commands to :data:`LIBRARY_COMMANDS`),
as ``python -m sttn_sim NAME …`` (the library's commands) and as ``python -m MODULE``
(each module's ``main``, built with :func:`module_main`).

:func:`run_guarded` is the one place where project errors become output: a one-line
``error: …`` on stderr (whitespace collapsed, long values cut with an ellipsis) and exit
code 2.  Exit codes: 0 success, 1 a check failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from .errors import SttnError

#: longest error line printed (characters, after collapsing whitespace)
MAX_ERROR_CHARS = 600


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, the module that implements it, a one-line help."""

    name: str
    module: str
    help: str


#: the library's commands (``python -m sttn_sim NAME``); analysis.cli adds its own
LIBRARY_COMMANDS = (
    Command("verify", "sttn_sim.verify", "check that a folded model is exactly the trained one"),
    Command("info", "sttn_sim.info", "show what a checkpoint holds"),
    Command("evaluate", "sttn_sim.evaluate", "accuracy of a checkpoint on an image dataset, audited, on one "
                                             "machine or a Dask cluster"),
    Command("bench", "sttn_sim.bench.cli", "time packed ternary inference against float baselines"),
    Command("export", "sttn_sim.export", "write a folded model as ONNX or QONNX (FINN)"),
)


def error_line(exc: BaseException, limit: int = MAX_ERROR_CHARS) -> str:
    """``error: <message>`` on one line: whitespace collapsed, cut to ``limit`` characters."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"error: {text}"


def run_guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; a project error becomes one ``error:`` line and exit code 2."""
    try:
        return run(args)
    except SttnError as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one ``error:`` line (exit code 2),
    naming the argument, like every other bad input."""

    def error(self, message: str):
        print(error_line(f"{self.prog}: {message} (see --help)"), file=sys.stderr)
        sys.exit(2)


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]`` (the message says which)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def _parse(parser: argparse.ArgumentParser, argv) -> argparse.Namespace | int:
    """Parsed arguments, or the exit code of ``--help`` (0) or a usage error (2)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def _load(command: Command):
    return importlib.import_module(command.module)


def module_main(module_name: str, prog: str) -> Callable[[Sequence[str] | None], int]:
    """``main(argv)`` for ``python -m module``: parse with the module's arguments, run guarded."""
    def main(argv: Sequence[str] | None = None) -> int:
        module = importlib.import_module(module_name)
        parser = Parser(prog=prog, description=module.DESCRIPTION)
        module.add_arguments(parser)
        args = _parse(parser, argv)
        return args if isinstance(args, int) else run_guarded(module.run, args)
    return main


def build_parser(commands: Sequence[Command], prog: str) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description="sttn_sim: ternary networks, bit-exact.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in commands:
        module = _load(command)
        p = sub.add_parser(command.name, help=command.help, description=module.DESCRIPTION)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None, *, commands: Sequence[Command] = LIBRARY_COMMANDS,
         prog: str = "python -m sttn_sim") -> int:
    """Dispatch ``argv`` to a subcommand of ``commands``."""
    parser = build_parser(commands, prog)
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return run_guarded(args._run, args)


__all__ = ["Command", "LIBRARY_COMMANDS", "MAX_ERROR_CHARS", "Parser", "bounded_int", "build_parser", "error_line", "main",
           "module_main", "run_guarded"]
