"""`harness train RECIPE`: a thin wrapper over trainers.run_recipe."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


def _parse_set(items: Sequence[str] | None) -> dict[str, Any]:
    """--set key=value (repeatable): a trl config field for every stage, e.g. save_steps=5."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"--set: expected key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML, or a shipped recipe: ift, cp-ift, ift-ha, cp-ift-ha")
    parser.add_argument("--output", type=Path, help="output folder (default: the recipe's, else runs/train/<recipe>)")
    parser.add_argument("--data-dir", type=Path, help="folder holding the training and test data files")
    parser.add_argument("--max-steps", type=int, help="optimizer steps of every stage (overrides the recipe)")
    parser.add_argument("--limit", type=int, help="samples per task when scoring each stage (overrides the recipe)")
    parser.add_argument("--no-eval", action="store_true", help="train only; score no checkpoint")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="a trl config field for every stage, e.g. --set save_steps=5 (repeatable)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads; 1 is much faster on a CPU that other jobs keep busy")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def _check_extra() -> None:
    import importlib.util

    missing = [m for m in ("peft", "trl", "datasketch") if importlib.util.find_spec(m) is None]
    if missing:
        raise HarnessError(f"training needs the `train` extra ({', '.join(missing)} missing): "
                           "pip install -e '.[train]'")


def run(args: argparse.Namespace) -> int:
    _check_extra()
    from trainers.pipeline import TrainOptions, format_report, run_recipe
    from trainers.recipe import load_recipe

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    options = TrainOptions(output=args.output, data_dir=args.data_dir, max_steps=args.max_steps,
                           eval_limit=args.limit, no_eval=args.no_eval, train_overrides=_parse_set(args.set))
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    report = run_recipe(recipe, options, progress=progress)
    print(format_report(report))
    print(f"report: {Path(report['output']) / 'report.json'}")
    return 0


def add_commands(sub: Any) -> None:
    train = sub.add_parser("train", help="run a training recipe (CP / IFT / HA) and score every stage")
    add_arguments(train)
    train.set_defaults(func=run)
