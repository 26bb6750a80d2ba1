"""The ``sttn`` console command: the library's commands (:data:`sttn_sim.cli.LIBRARY_COMMANDS`)
and the application's (figures, compare, soft-vs-hard, demo), each also reachable as
``python -m MODULE``."""

from __future__ import annotations

import sys

from sttn_sim.cli import LIBRARY_COMMANDS, Command
from sttn_sim.cli import main as dispatch

#: every ``sttn`` subcommand, library first
COMMANDS = LIBRARY_COMMANDS + (
    Command("figures", "analysis.report", "write every statistic table and paper-style figure of a model"),
    Command("compare", "analysis.compare", "compare two checkpoints layer by layer"),
    Command("soft-vs-hard", "analysis.soft_vs_hard", "train STTN and hard-threshold baselines, compare them"),
    Command("demo", "analysis.demo", "the main job on the embedded default model"),
)


def main(argv=None) -> int:
    """``sttn COMMAND …``"""
    return dispatch(argv, commands=COMMANDS, prog="sttn")


if __name__ == "__main__":
    sys.exit(main())
