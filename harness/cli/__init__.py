"""The command line, `harness COMMAND`: the composition root. Each module registers one area's
commands (run: run / merge / tasks / show / export-lmeval; leaderboard; judge; train); this is
the only part of harness/ that imports judges/, leaderboard/ and trainers/. Heavy imports happen
inside commands, so `harness --help` never loads torch."""

from harness.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
