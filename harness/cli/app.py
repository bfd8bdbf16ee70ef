"""Command line: `harness COMMAND`. Each area registers its own commands (harness.cli.run,
.leaderboard, .judge, .train); this module builds the parser and runs a command with one-line
errors. Heavy imports happen inside commands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from harness import __version__
from harness.errors import HarnessError


def build_parser() -> argparse.ArgumentParser:
    from harness.cli import annotate, judge, leaderboard, run, train

    parser = argparse.ArgumentParser(prog="harness", description="Evaluate medical LLMs.")
    parser.add_argument("--version", action="version", version=f"medllm-harness {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)
    run.add_commands(sub)
    leaderboard.add_commands(sub)
    judge.add_commands(sub)
    train.add_commands(sub)
    annotate.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        result: int = args.func(args)
        return result
    except HarnessError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for users; --debug for the traceback
        if args.debug:
            raise
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            print(f"error: invalid option {loc}: {first['msg']}", file=sys.stderr)
            return 2
        print(f"error: {type(exc).__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
