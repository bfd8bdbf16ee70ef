"""`harness judge pointwise|pairwise|rank|rubric|calibrate`: argument parsing over judges.commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cli.options import (
    backend_args,
    default_cache,
    price_table_arg,
    progress_bar,
    split_list,
    store_arg,
    write_cost,
)
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.scoring.cost import PriceTable
    from judges.commands import Judged


def _judge_config(args: argparse.Namespace, model: str | None = None) -> Any:
    from harness.run.threads import apply_threads
    from judges.judge import JudgeConfig

    apply_threads(getattr(args, "threads", None))
    return JudgeConfig(
        backend=args.judge_backend, model=model if model is not None else args.judge,
        model_args=backend_args(args, args.judge_args),
        batch_size=args.batch_size,
        max_tokens=args.max_tokens, cache=None if args.no_cache else (args.cache or default_cache()),
        max_attempts=args.max_attempts,
    )


def _print_judged(judged: Judged, table: PriceTable | None) -> int:
    """The command's text, then with --price-table its cost line (X.cost.json beside the results)."""
    print(judged.text.rstrip("\n"))
    if table is not None:
        print(write_cost(judged.cost_path, judged.usage, table, no_tokens="no model judge: nothing to price"))
    return 0


def cmd_judge_pointwise(args: argparse.Namespace) -> int:
    from judges import commands

    table = price_table_arg(args.price_table)  # checked before any judging
    return _print_judged(commands.pointwise(Path(args.run), _judge_config(args), prompt=args.prompt or "pointwise",
                                            tasks=split_list(args.tasks), reference=args.reference, store=args.store,
                                            progress=None if args.quiet else progress_bar), table)


def cmd_judge_pairwise(args: argparse.Namespace) -> int:
    from judges import commands

    table = price_table_arg(args.price_table)
    return _print_judged(commands.pairwise(Path(args.run_a), Path(args.run_b), _judge_config(args),
                                           prompt=args.prompt or "pairwise", tasks=split_list(args.tasks),
                                           store=args.store, progress=None if args.quiet else progress_bar), table)


def cmd_judge_rank(args: argparse.Namespace) -> int:
    from judges import commands

    table = price_table_arg(args.price_table)
    return _print_judged(commands.rank([Path(r) for r in args.runs], _judge_config(args),
                                       prompt=args.prompt or "pairwise", tasks=split_list(args.tasks),
                                       output=args.output, seed=args.seed, rounds=args.bootstrap, store=args.store,
                                       progress=None if args.quiet else progress_bar,
                                       style_control=args.style_control), table)


def cmd_judge_calibrate(args: argparse.Namespace) -> int:
    from judges import commands

    config = None if args.baselines_only else _judge_config(args)
    if (args.dataset is None) == (args.human_campaign is None):
        raise HarnessError("name exactly one of --dataset (published labels) or --human-campaign (your own)")
    if args.human_campaign is not None:  # labels of a `harness annotate` campaign
        from judges.human.calibrate import calibrate_command

        print(calibrate_command(store_arg(args), args.human_campaign, config, prompt=args.prompt,
                                criterion=args.human_criterion, role=args.human_role, seed=args.seed,
                                output=args.output, publish=args.publish,
                                progress=None if args.quiet else progress_bar).rstrip("\n"))
        return 0
    if args.data_dir is None:
        raise HarnessError("--dataset needs --data-dir (the folder holding judge_calibration/ or healthbench/)")
    print(commands.calibrate(args.dataset, args.data_dir, config, prompt=args.prompt, limit=args.limit,
                             seed=args.seed, output=args.output, store=args.store,
                             progress=None if args.quiet else progress_bar).rstrip("\n"))
    return 0


def cmd_judge_rubric(args: argparse.Namespace) -> int:
    from harness.cli.model_flags import pair_model_flags
    from judges import commands

    table = price_table_arg(args.price_table)
    paired = pair_model_flags(args.judge or ["default"], args.judge_backend, args.judge_args, model_flag="--judge",
                              backend_flag="--judge-backend", args_flag="--judge-args")
    configs = [_judge_config(argparse.Namespace(**{**vars(args), "judge_backend": p.backend, "judge_args": p.args}),
                             None if p.model == "default" else p.model) for p in paired]
    return _print_judged(commands.rubric_jury([Path(r) for r in args.runs], configs, prompt=args.prompt,
                                              tasks=split_list(args.tasks), partial=args.partial_rubrics,
                                              output=args.output, progress=None if args.quiet else progress_bar), table)


def _add_price_table(p: argparse.ArgumentParser) -> None:
    p.add_argument("--price-table", type=Path, help="USD per million tokens per model name (YAML or JSON; a judge is "
                   "named by its label, e.g. hf:default or openai:MODEL): write the judges' token cost beside the "
                   "results file X.json as X.cost.json")


def _add_judge_options(p: argparse.ArgumentParser, many: bool = False) -> None:
    g = p.add_argument_group("judge")
    if many:
        g.add_argument("--judge", action="append", help="a grader model (repeat for a jury; 'default' = the embedded "
                       "SmolLM2-135M); --judge-backend / --judge-args given once apply to every grader, given once "
                       "per --judge pair with them in order")
        g.add_argument("--judge-backend", action="append", help="hf, vllm or openai (default: hf); repeatable")
        g.add_argument("--judge-args", action="append", help="judge backend arguments, e.g. dtype=bfloat16 or "
                       "extra.repeat_penalty=1.0; repeatable")
    else:
        g.add_argument("--judge", help="judge model: local folder, HF id or server model name (default: embedded "
                       "SmolLM2-135M)")
        g.add_argument("--judge-backend", default="hf", help="hf, vllm or openai (default: hf)")
        g.add_argument("--judge-args", help="judge backend arguments, e.g. dtype=bfloat16 or extra.repeat_penalty=1.0")
    g.add_argument("--base-url", help="openai backend: the server, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--api-key-env", help="openai backend: NAME of the environment variable holding the key")
    g.add_argument("--concurrency", type=int, help="openai backend: requests in flight (default 8)")
    g.add_argument("--timeout", type=float, help="openai backend: seconds per request (default 60)")
    g.add_argument("--prompt", help="judge prompt: a built-in name (see judges/prompts) or a YAML file; rubric "
                   "graders: tasks/prompts/rubric_grader.yaml by default, or a .yaml / upstream-style text file")
    g.add_argument("--max-tokens", type=int, help="reply length limit (default: the prompt file's)")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--threads", type=int, help="torch CPU threads (default: OMP_NUM_THREADS, else the usable "
                   "cores minus the current load, at least 1)")
    g.add_argument("--cache", type=Path, help="SQLite request cache (default: user cache)")
    g.add_argument("--no-cache", action="store_true", help="do not use the request cache")
    g.add_argument("--max-attempts", type=int, default=4, help="tries per request on transient failures (default 4)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def add_commands(sub: Any) -> None:
    """Register the commands on the top-level subparsers."""
    judge = sub.add_parser("judge", help="LLM-as-judge: pointwise, pairwise, rankings, calibration studies")
    judge_sub = judge.add_subparsers(dest="judge_command", required=True)
    store_note = "import the results into this results store (SQLite path or SQLAlchemy URL)"
    tasks_note = "comma-separated task names or keys to judge (default: every generative task of the run)"
    j_point = judge_sub.add_parser("pointwise", help="score a run's outputs on the seven medical dimensions")
    j_point.add_argument("run", help="run folder")
    j_point.add_argument("--tasks", help=tasks_note)
    j_point.add_argument("--reference", action="store_true", help="show the judge the reference answer too")
    j_point.add_argument("--store", help=store_note)
    _add_price_table(j_point)
    _add_judge_options(j_point)
    j_point.set_defaults(func=cmd_judge_pointwise)
    j_pair = judge_sub.add_parser("pairwise", help="compare two runs' outputs, each pair in both orders")
    j_pair.add_argument("run_a", help="run folder A")
    j_pair.add_argument("run_b", help="run folder B")
    j_pair.add_argument("--tasks", help=tasks_note)
    j_pair.add_argument("--store", help=store_note)
    _add_price_table(j_pair)
    _add_judge_options(j_pair)
    j_pair.set_defaults(func=cmd_judge_pairwise)
    j_rank = judge_sub.add_parser("rank", help="Bradley–Terry ranking of many runs from pairwise battles")
    j_rank.add_argument("runs", nargs="+", help="run folders (two or more)")
    j_rank.add_argument("--tasks", help=tasks_note)
    j_rank.add_argument("--output", type=Path, help="folder for the ranking (default: beside the first run)")
    j_rank.add_argument("--bootstrap", type=int, default=1000, help="bootstrap rounds for the CIs (default 1000)")
    j_rank.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    j_rank.add_argument("--style-control", action="store_true", help="also rate with style control (Chatbot "
                        "Arena's: length, headers, lists and bold as covariates); raw and controlled ratings")
    j_rank.add_argument("--store", help=store_note)
    _add_price_table(j_rank)
    _add_judge_options(j_rank)
    j_rank.set_defaults(func=cmd_judge_rank)
    j_rub = judge_sub.add_parser("rubric", help="re-grade rubric runs' stored responses with one or more graders "
                                 "(a jury: per-grader scores, failures, alpha, leave-one-out rank stability)")
    j_rub.add_argument("runs", nargs="+", help="run folders of rubric tasks (e.g. healthbench)")
    j_rub.add_argument("--tasks", help=tasks_note)
    j_rub.add_argument("--partial-rubrics", action="store_true",
                       help="score an example on its graded items when some did not parse (default: unscored)")
    j_rub.add_argument("--output", type=Path, help="folder for jury.md / jury.json (default: runs/jury-<hash>)")
    _add_price_table(j_rub)
    _add_judge_options(j_rub, many=True)
    j_rub.set_defaults(func=cmd_judge_rubric)
    j_cal = judge_sub.add_parser("calibrate", help="agreement with human labels, biases and baselines")
    j_cal.add_argument("--dataset", help="llmbar_natural, llmbar_adversarial_{gptinst,gptout,"
                       "manual,neighbor}, mt_bench, faireval, llmeval2 or pandalm (pairwise judges); "
                       "healthbench_meta or healthbench_meta_gold120 (rubric graders vs physicians)")
    j_cal.add_argument("--data-dir", type=Path,
                       help="folder holding judge_calibration/ (or healthbench/ for the HealthBench studies)")
    j_cal.add_argument("--human-campaign", help="instead of --dataset: the labels of a `harness annotate` campaign")
    j_cal.add_argument("--store", help="--dataset: also store the judge's (grader's) agreement in this results store, "
                       "where the leaderboard shows it beside the judge's results; --human-campaign: the results "
                       "store holding the campaign (default: $HARNESS_STORE)")
    j_cal.add_argument("--human-criterion", default="overall",
                       help="--human-campaign: the dimension the judge is compared on (default: overall)")
    j_cal.add_argument("--human-role", choices=["expert", "lay"], help="--human-campaign: only these annotators")
    j_cal.add_argument("--publish", action="store_true",
                       help="--human-campaign: store the judge's agreement with these humans for the leaderboard")
    j_cal.add_argument("--limit", type=int, help="study only the first N pairs")
    j_cal.add_argument("--seed", type=int, default=0, help="seed of the random baseline (default 0)")
    j_cal.add_argument("--output", type=Path, help="folder for the tables (default: runs/calibration/DATASET-JUDGE-nN)")
    j_cal.add_argument("--baselines-only", action="store_true", help="no model: only the baselines")
    _add_judge_options(j_cal)
    j_cal.set_defaults(func=cmd_judge_calibrate)
