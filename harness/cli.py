"""Command line: a thin layer over library functions. Heavy imports happen inside commands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import __version__
from harness.errors import HarnessError


def _parse_model_args(text: str | None) -> dict[str, Any]:
    """"dtype=float32,device=cpu" -> dict; numbers and booleans are converted; `extra.NAME=V`
    entries are collected into `extra_body` (sent with every request by the openai backend)."""
    out: dict[str, Any] = {}
    if not text:
        return out
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"--model-args: expected key=value, got {item!r}")
        v: Any = value.strip()
        if v.lower() in ("true", "false"):
            v = v.lower() == "true"
        else:
            for convert in (int, float):
                try:
                    v = convert(v)
                    break
                except ValueError:
                    pass
        key = key.strip()
        if key.startswith("extra."):  # server-specific request fields, e.g. extra.repeat_penalty=1.0
            out.setdefault("extra_body", {})[key.removeprefix("extra.")] = v
        else:
            out[key] = v
    return out


def _default_cache() -> Path:
    from harness.default_model import cache_root

    return cache_root() / "requests.sqlite"


def _progress(desc: str, total: int, initial: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="sample", file=sys.stderr,
                dynamic_ncols=True)


# Auxiliary models of `harness run`, by role: (role, what it does), see RunConfig.aux_models.
AUX_ROLES = (("patient", "interactive tasks: an LLM patient instead of the retrieval patient"),
             ("turn_judge", "pqa tasks: an LLM labels turns asking/advising instead of the rule"))


def _aux_models(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for role, _ in AUX_ROLES:
        model, backend, extra = (getattr(args, f"{role}_{k}") for k in ("model", "backend", "args"))
        if model is not None or backend is not None or extra is not None:
            out[role] = {"model": None if model == "default" else model, "backend": backend or "hf",
                         "model_args": _parse_model_args(extra)}
    return out


def _sft_recipe(args: argparse.Namespace) -> dict[str, Any] | None:
    """--protocol sft: the recipe's validated contents (the default recipe without --sft-recipe),
    so config.json pins what was trained."""
    from harness.sft.protocol import is_sft

    if not is_sft(args.protocol):
        if args.sft_recipe is not None:
            raise HarnessError("--sft-recipe needs --protocol sft (or sft+NAME)")
        return None
    from harness.sft.recipe import SFTRecipe, load_sft_recipe

    recipe = load_sft_recipe(args.sft_recipe) if args.sft_recipe is not None else SFTRecipe()
    return recipe.model_dump(mode="json")


def cmd_run(args: argparse.Namespace) -> int:
    from harness.config import RunConfig
    from harness.report import format_record
    from harness.runner import Runner
    from harness.types import stable_hash

    tasks = tuple(t.strip() for t in (args.tasks or "").split(",") if t.strip())
    model_args = _parse_model_args(args.model_args)
    # conveniences for remote backends; they travel as backend arguments
    for key in ("base_url", "api_key_env", "concurrency", "timeout"):
        if getattr(args, key) is not None:
            model_args[key] = getattr(args, key)
    fields: dict[str, Any] = dict(
        model=args.model, backend=args.backend, model_args=model_args,
        batch_size=args.batch_size, suite=args.suite, tasks=tasks, protocol=args.protocol,
        num_fewshot=args.num_fewshot, seed=args.seed, limit=args.limit,
        data_source=args.data_source, data_dir=args.data_dir,
        cache=None if args.no_cache else (args.cache or _default_cache()),
        task_dirs=tuple(args.include_tasks or ()), shard=args.shard, max_attempts=args.max_attempts,
        lmeval_include=args.lmeval_include, aux_models=_aux_models(args), sft_recipe=_sft_recipe(args),
    )
    output = args.output
    if output is None:
        # Deterministic default: rerunning the same command resumes the same run.
        probe = RunConfig(**fields, output=Path("."))
        label = args.suite or "-".join(tasks)[:40] or "run"
        model = Path(args.model).name if args.model else "default"
        output = Path("runs") / f"{label}-{model}-{stable_hash(probe.identity())[:8]}"
    config = RunConfig(**fields, output=output)
    progress = None if args.quiet else _progress
    record = Runner(config, progress=progress).run()
    print(format_record(record))
    print(f"record: {config.output / 'run.json'}")
    if args.store:
        from leaderboard.store import Store

        with Store(args.store) as store:
            outcome = store.import_run(config.output)
        print(f"store: {'added' if outcome.added else 'already held'} run {outcome.run_id} in {store.url}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from harness.merge import merge_runs
    from harness.report import format_record

    record = merge_runs([Path(p) for p in args.runs], args.output)
    print(format_record(record))
    print(f"record: {args.output / 'run.json'}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from harness.catalog import load_catalog

    cat = load_catalog(args.include_tasks or ())
    print("tasks:")
    for name, spec in sorted(cat.tasks.items()):
        protocols = ", ".join(sorted(spec.protocols))
        print(f"  {name:<32} v{spec.version}  protocols: {protocols}  {spec.description}")
    print("suites:")
    for name, suite in sorted(cat.suites.items()):
        print(f"  {name:<32} {len(suite.tasks)} tasks ({suite.source} data)  {suite.description}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from harness.records import read_record
    from harness.report import format_record

    print(format_record(read_record(Path(args.run))))
    return 0


def _store_arg(args: argparse.Namespace) -> str:
    store: str | None = args.store or os.environ.get("HARNESS_STORE")
    if not store:
        raise HarnessError("name the results store: --store PATH_OR_URL (or set HARNESS_STORE)")
    return store


def cmd_leaderboard_import(args: argparse.Namespace) -> int:
    from leaderboard.store import Store

    with Store(_store_arg(args)) as store:
        for path in args.paths:
            outcome = store.import_path(Path(path))
            if isinstance(outcome, int):
                print(f"{path}: {outcome} new generic result(s)")
            else:
                state = "added" if outcome.added else "already held (no change)"
                print(f"{path}: {state}: run {outcome.run_id}, model {outcome.model_name}, {outcome.n_tasks} tasks")
    return 0


def cmd_leaderboard_build(args: argparse.Namespace) -> int:
    from leaderboard.rankings import leaderboard_from_store
    from leaderboard.site import build_site
    from leaderboard.store import Store

    with Store(_store_arg(args)) as store:
        site = build_site(leaderboard_from_store(store), args.out)
    print(f"site: {site.index} ({len(site.model_pages)} model pages)")
    return 0


def cmd_leaderboard_show(args: argparse.Namespace) -> int:
    from leaderboard.export import render
    from leaderboard.rankings import leaderboard_from_store
    from leaderboard.store import Store

    with Store(_store_arg(args)) as store:
        text = render(leaderboard_from_store(store), args.format)
    print(text.rstrip("\n"))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from leaderboard.compare import compare_runs, format_comparison

    result = compare_runs(Path(args.base), Path(args.new), alpha=args.alpha, max_drop=args.max_drop, seed=args.seed)
    print(format_comparison(result))
    return 1 if result.regressions else 0


def _judge_config(args: argparse.Namespace) -> Any:
    from judges.judge import JudgeConfig

    model_args = _parse_model_args(args.judge_args)
    for key in ("base_url", "api_key_env", "concurrency", "timeout"):
        if getattr(args, key) is not None:
            model_args[key] = getattr(args, key)
    return JudgeConfig(
        backend=args.judge_backend, model=args.judge, model_args=model_args, batch_size=args.batch_size,
        max_tokens=args.max_tokens, cache=None if args.no_cache else (args.cache or _default_cache()),
        max_attempts=args.max_attempts,
    )


def _judge_tasks(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(t.strip() for t in (args.tasks or "").split(",") if t.strip())


def cmd_judge_pointwise(args: argparse.Namespace) -> int:
    from judges import commands

    print(commands.pointwise(Path(args.run), _judge_config(args), prompt=args.prompt or "pointwise",
                             tasks=_judge_tasks(args), reference=args.reference, store=args.store,
                             progress=None if args.quiet else _progress).rstrip("\n"))
    return 0


def cmd_judge_pairwise(args: argparse.Namespace) -> int:
    from judges import commands

    print(commands.pairwise(Path(args.run_a), Path(args.run_b), _judge_config(args), prompt=args.prompt or "pairwise",
                            tasks=_judge_tasks(args), store=args.store,
                            progress=None if args.quiet else _progress).rstrip("\n"))
    return 0


def cmd_judge_rank(args: argparse.Namespace) -> int:
    from judges import commands

    print(commands.rank([Path(r) for r in args.runs], _judge_config(args), prompt=args.prompt or "pairwise",
                        tasks=_judge_tasks(args), output=args.output, seed=args.seed, rounds=args.bootstrap,
                        store=args.store, progress=None if args.quiet else _progress).rstrip("\n"))
    return 0


def cmd_judge_calibrate(args: argparse.Namespace) -> int:
    from judges import commands

    config = None if args.baselines_only else _judge_config(args)
    print(commands.calibrate(args.dataset, args.data_dir, config, prompt=args.prompt or "pairwise", limit=args.limit,
                             seed=args.seed, output=args.output,
                             progress=None if args.quiet else _progress).rstrip("\n"))
    return 0


def _add_judge_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("judge")
    g.add_argument("--judge", help="judge model: local folder, HF id or server model name (default: embedded "
                   "SmolLM2-135M)")
    g.add_argument("--judge-backend", default="hf", help="hf, vllm or openai (default: hf)")
    g.add_argument("--judge-args", help="judge backend arguments, e.g. dtype=bfloat16 or extra.repeat_penalty=1.0")
    g.add_argument("--base-url", help="openai backend: the server, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--api-key-env", help="openai backend: NAME of the environment variable holding the key")
    g.add_argument("--concurrency", type=int, help="openai backend: requests in flight (default 8)")
    g.add_argument("--timeout", type=float, help="openai backend: seconds per request (default 60)")
    g.add_argument("--prompt", help="judge prompt: a built-in name (see judges/prompts) or a YAML file")
    g.add_argument("--max-tokens", type=int, help="reply length limit (default: the prompt file's)")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--cache", type=Path, help="SQLite request cache (default: user cache)")
    g.add_argument("--no-cache", action="store_true", help="do not use the request cache")
    g.add_argument("--max-attempts", type=int, default=4, help="tries per request on transient failures (default 4)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_train(args: argparse.Namespace) -> int:
    from trainers.cli import run

    return run(args)


def cmd_export_lmeval(args: argparse.Namespace) -> int:
    from harness.lmeval_export import export_lmeval

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    source = args.data_source or ("local" if args.data_dir else "bundled")
    exported = export_lmeval(args.out_dir, tasks, source, args.data_dir, args.limit)  # type: ignore[arg-type]
    for e in exported:
        print(f"{e.lm_task}: {e.n_samples} samples ({source}) -> {e.yaml}")
    print(f"run them with: lm_eval --model hf --model_args pretrained=MODEL --include_path {args.out_dir} "
          f"--tasks {','.join(e.lm_task for e in exported)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Evaluate medical LLMs.")
    parser.add_argument("--version", action="version", version=f"medllm-harness {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="score a model on tasks or a suite")
    run.add_argument("--model", help="local folder or HF hub id (default: embedded SmolLM2-135M)")
    run.add_argument("--backend", default="hf", help="hf, vllm or openai (default: hf)")
    run.add_argument("--base-url", help="openai backend: the server, e.g. http://127.0.0.1:8000/v1")
    run.add_argument("--api-key-env", help="openai backend: NAME of the environment variable holding the key")
    run.add_argument("--concurrency", type=int, help="openai backend: requests in flight (default 8)")
    run.add_argument("--timeout", type=float, help="openai backend: seconds per request (default 60)")
    run.add_argument("--model-args", help="backend arguments, e.g. dtype=bfloat16,device=cuda")
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--suite", help="suite name (see `harness tasks`)")
    run.add_argument("--tasks", help="comma-separated task ids; lm_eval:NAME runs lm-eval's task NAME")
    run.add_argument("--protocol", help="loglik, loglik_text, generate, cot, sc@K, voc (default: per task); "
                     "sft / sft+NAME: fine-tune on each task's train split, then score with the task's "
                     "default protocol / NAME")
    run.add_argument("--sft-recipe", type=Path, help="--protocol sft: fine-tuning recipe YAML (method, max_steps, "
                     "learning_rate, ...; default: LoRA, 30 steps)")
    run.add_argument("--num-fewshot", type=int, default=0)
    run.add_argument("--seed", type=int, default=1234)
    run.add_argument("--limit", type=int, help="score only the first N samples of each task")
    run.add_argument("--data-source", default="auto", choices=["auto", "bundled", "local", "hub"])
    run.add_argument("--data-dir", type=Path, help="folder holding the local data files")
    run.add_argument("--output", type=Path, help="run folder (default: runs/<suite>-<model>-<hash>)")
    run.add_argument("--cache", type=Path, help="SQLite request cache (default: user cache)")
    run.add_argument("--no-cache", action="store_true", help="do not use the request cache")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--include-tasks", type=Path, action="append",
                     help="extra folder of task YAMLs (repeatable)")
    run.add_argument("--lmeval-include", type=Path,
                     help="folder of extra lm-eval task YAMLs, for --tasks lm_eval:NAME")
    run.add_argument("--shard", help="I/N: score only shard I (0-based) of N of every task")
    run.add_argument("--max-attempts", type=int, default=4,
                     help="tries per request before its sample is unscored (default 4)")
    run.add_argument("--store", help="after the run, import it into this results store (SQLite path or "
                     "SQLAlchemy URL)")
    for role, what in AUX_ROLES:
        flag = role.replace("_", "-")
        run.add_argument(f"--{flag}-model", help=f"{what}: its model ('default' = the embedded model)")
        run.add_argument(f"--{flag}-backend", help=f"backend of the {flag} model: hf, vllm or openai (default: hf)")
        run.add_argument(f"--{flag}-args", help=f"backend arguments of the {flag} model, e.g. "
                         "base_url=http://127.0.0.1:8000/v1,api_key_env=MY_KEY_VAR")
    run.set_defaults(func=cmd_run)

    merge = sub.add_parser("merge", help="combine the shards of a run into one record")
    merge.add_argument("runs", nargs="+", help="shard run folders")
    merge.add_argument("--output", type=Path, required=True, help="folder for the merged run")
    merge.set_defaults(func=cmd_merge)

    tasks = sub.add_parser("tasks", help="list tasks and suites")
    tasks.add_argument("--include-tasks", type=Path, action="append",
                       help="extra folder of task YAMLs (repeatable)")
    tasks.set_defaults(func=cmd_tasks)

    show = sub.add_parser("show", help="print a finished (or partial) run")
    show.add_argument("run", help="run folder or run.json")
    show.set_defaults(func=cmd_show)

    export = sub.add_parser("export-lmeval", help="write our MCQA tasks as lm-eval task YAMLs over local data")
    export.add_argument("out_dir", type=Path, help="folder for the task YAMLs and data files")
    export.add_argument("--tasks", help="comma-separated task ids (default: every MCQA task)")
    export.add_argument("--data-dir", type=Path, help="read the full local data (else the bundled samples)")
    export.add_argument("--data-source", choices=["bundled", "local", "hub"])
    export.add_argument("--limit", type=int, help="first N samples of each task")
    export.set_defaults(func=cmd_export_lmeval)

    board = sub.add_parser("leaderboard", help="results store, rankings and the static site")
    board_sub = board.add_subparsers(dest="leaderboard_command", required=True)
    store_help = "results store: SQLite file or SQLAlchemy URL (default: $HARNESS_STORE)"
    lb_import = board_sub.add_parser("import", help="store finished runs (folders) or judge results (JSON)")
    lb_import.add_argument("paths", nargs="+", help="run folders, run.json files or results JSON files")
    lb_import.add_argument("--store", help=store_help)
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

    judge = sub.add_parser("judge", help="LLM-as-judge: pointwise, pairwise, rankings, calibration studies")
    judge_sub = judge.add_subparsers(dest="judge_command", required=True)
    store_note = "import the results into this results store (SQLite path or SQLAlchemy URL)"
    tasks_note = "comma-separated task names or keys to judge (default: every generative task of the run)"
    j_point = judge_sub.add_parser("pointwise", help="score a run's outputs on the seven medical dimensions")
    j_point.add_argument("run", help="run folder")
    j_point.add_argument("--tasks", help=tasks_note)
    j_point.add_argument("--reference", action="store_true", help="show the judge the reference answer too")
    j_point.add_argument("--store", help=store_note)
    _add_judge_options(j_point)
    j_point.set_defaults(func=cmd_judge_pointwise)
    j_pair = judge_sub.add_parser("pairwise", help="compare two runs' outputs, each pair in both orders")
    j_pair.add_argument("run_a", help="run folder A")
    j_pair.add_argument("run_b", help="run folder B")
    j_pair.add_argument("--tasks", help=tasks_note)
    j_pair.add_argument("--store", help=store_note)
    _add_judge_options(j_pair)
    j_pair.set_defaults(func=cmd_judge_pairwise)
    j_rank = judge_sub.add_parser("rank", help="Bradley–Terry ranking of many runs from pairwise battles")
    j_rank.add_argument("runs", nargs="+", help="run folders (two or more)")
    j_rank.add_argument("--tasks", help=tasks_note)
    j_rank.add_argument("--output", type=Path, help="folder for the ranking (default: beside the first run)")
    j_rank.add_argument("--bootstrap", type=int, default=1000, help="bootstrap rounds for the CIs (default 1000)")
    j_rank.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    j_rank.add_argument("--store", help=store_note)
    _add_judge_options(j_rank)
    j_rank.set_defaults(func=cmd_judge_rank)
    j_cal = judge_sub.add_parser("calibrate", help="agreement with human labels, biases and baselines")
    j_cal.add_argument("--dataset", required=True, help="llmbar_natural, llmbar_adversarial_{gptinst,gptout,"
                       "manual,neighbor}, mt_bench, faireval, llmeval2 or pandalm")
    j_cal.add_argument("--data-dir", type=Path, required=True, help="folder holding judge_calibration/")
    j_cal.add_argument("--limit", type=int, help="study only the first N pairs")
    j_cal.add_argument("--seed", type=int, default=0, help="seed of the random baseline (default 0)")
    j_cal.add_argument("--output", type=Path, help="folder for the tables (default: runs/calibration/DATASET-JUDGE-nN)")
    j_cal.add_argument("--baselines-only", action="store_true", help="no model: only the baselines")
    _add_judge_options(j_cal)
    j_cal.set_defaults(func=cmd_judge_calibrate)

    from trainers.cli import add_arguments as add_train_arguments

    train = sub.add_parser("train", help="run a training recipe (CP / IFT / HA) and score every stage")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)
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
