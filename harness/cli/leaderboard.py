"""`harness leaderboard import|build|show` and `harness compare`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.cli.options import store_arg


def cmd_leaderboard_import(args: argparse.Namespace) -> int:
    from harness.scoring.cost import load_price_table
    from leaderboard.store import Store

    table = load_price_table(args.price_table) if args.price_table else None
    with Store(store_arg(args)) as store:
        for path in args.paths:
            outcome = store.import_path(Path(path), table)
            if isinstance(outcome, int):
                print(f"{path}: {outcome} new generic result(s)")
            else:
                state = "added" if outcome.added else "already held (no change)"
                if not outcome.added and outcome.n_costs:
                    state = "already held (cost added)"
                costs = f", {outcome.n_costs} priced" if outcome.n_costs else ""
                print(f"{path}: {state}: run {outcome.run_id}, model {outcome.model_name}, "
                      f"{outcome.n_tasks} tasks{costs}")
    return 0


def cmd_leaderboard_build(args: argparse.Namespace) -> int:
    from leaderboard.rankings import leaderboard_from_store
    from leaderboard.site import build_site
    from leaderboard.store import Store

    with Store(store_arg(args)) as store:
        site = build_site(leaderboard_from_store(store), args.out, history=store.task_results())
    print(f"site: {site.index} ({len(site.model_pages)} model pages)")
    return 0


def cmd_leaderboard_show(args: argparse.Namespace) -> int:
    from leaderboard.export import render
    from leaderboard.rankings import leaderboard_from_store
    from leaderboard.store import Store

    with Store(store_arg(args)) as store:
        text = render(leaderboard_from_store(store), args.format)
    print(text.rstrip("\n"))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from leaderboard.compare import compare_runs, format_comparison

    result = compare_runs(Path(args.base), Path(args.new), alpha=args.alpha, max_drop=args.max_drop, seed=args.seed)
    print(format_comparison(result))
    return 1 if result.regressions else 0


def add_commands(sub: Any) -> None:
    """Register the commands on the top-level subparsers."""
    board = sub.add_parser("leaderboard", help="results store, rankings and the static site")
    board_sub = board.add_subparsers(dest="leaderboard_command", required=True)
    store_help = "results store: SQLite file or SQLAlchemy URL (default: $HARNESS_STORE)"
    lb_import = board_sub.add_parser("import", help="store finished runs (folders) or judge results (JSON)")
    lb_import.add_argument("paths", nargs="+", help="run folders, run.json files or results JSON files")
    lb_import.add_argument("--store", help=store_help)
    lb_import.add_argument("--price-table", type=Path, help="price the recorded tokens of runs that have no "
                           "cost.json (USD per million tokens per model name, as `harness run --price-table`)")
    lb_import.set_defaults(func=cmd_leaderboard_import)
    lb_build = board_sub.add_parser("build", help="write the static leaderboard site")
    lb_build.add_argument("--out", type=Path, required=True, help="folder for the site")
    lb_build.add_argument("--store", help=store_help)
    lb_build.set_defaults(func=cmd_leaderboard_build)
    lb_show = board_sub.add_parser("show", help="print the rankings")
    lb_show.add_argument("--format", choices=["table", "md", "csv", "json"], default="table")
    lb_show.add_argument("--store", help=store_help)
    lb_show.set_defaults(func=cmd_leaderboard_show)

    compare = sub.add_parser("compare", help="paired significance per task; exit 1 on a regression")
    compare.add_argument("base", help="baseline run folder (the last good run)")
    compare.add_argument("new", help="new run folder")
    compare.add_argument("--max-drop", type=float, default=0.0,
                         help="largest tolerated absolute drop of a task's main metric (default 0.0)")
    compare.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    compare.add_argument("--seed", type=int, default=0, help="seed of permutation / bootstrap tests")
    compare.set_defaults(func=cmd_compare)
