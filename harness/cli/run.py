"""`harness run`, `merge`, `tasks`, `show` and `export-lmeval`: argument parsing and the thin
commands over the library. Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.cli.options import (
    backend_args,
    default_cache,
    parse_model_args,
    progress_bar,
    split_list,
    write_cost,
)
from harness.errors import HarnessError

# Auxiliary models of `harness run`, by role: (role, what it does), see RunConfig.aux_models.
AUX_ROLES = (("patient", "interactive tasks: an LLM patient instead of the retrieval patient"),
             ("turn_judge", "pqa tasks: an LLM labels turns asking/advising instead of the rule"),
             ("grader", "rubric tasks (healthbench*): the model that decides each rubric item"),
             ("extractor", "generative MCQA with --extractor model: reads the answers the rule is unsure of"))
# Roles whose --ROLE-model may be repeated (a jury; backends and arguments paired by position).
JURY_ROLES = frozenset({"grader"})


def _aux_models(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for role, _ in AUX_ROLES:
        if role in JURY_ROLES:
            out.update(_jury(args, role))
            continue
        model, backend, extra = (getattr(args, f"{role}_{k}") for k in ("model", "backend", "args"))
        if model is not None or backend is not None or extra is not None:
            out[role] = {"model": None if model == "default" else model, "backend": backend or "hf",
                         "model_args": parse_model_args(extra)}
    return out


def _jury(args: argparse.Namespace, role: str) -> dict[str, Any]:
    """--grader-model given N times: the graders grader, grader_2, ..., each with its backend and
    arguments by position (harness.cli.model_flags); once: today's single grader."""
    from harness.cli.model_flags import pair_model_flags
    from harness.protocols.rubric import grader_role

    flag = role.replace("_", "-")
    paired = pair_model_flags(getattr(args, f"{role}_model"), getattr(args, f"{role}_backend"),
                              getattr(args, f"{role}_args"), model_flag=f"--{flag}-model",
                              backend_flag=f"--{flag}-backend", args_flag=f"--{flag}-args", default_model="default")
    return {grader_role(k): {"model": None if p.model == "default" else p.model, "backend": p.backend,
                             "model_args": parse_model_args(p.args)} for k, p in enumerate(paired)}


def _sft_recipe(args: argparse.Namespace) -> dict[str, Any] | None:
    """--protocol sft: the recipe's validated contents (the default recipe without --sft-recipe),
    so config.json pins what was trained."""
    from harness.protocols.sft import is_sft

    if not is_sft(args.protocol):
        if args.sft_recipe is not None:
            raise HarnessError("--sft-recipe needs --protocol sft (or sft+NAME)")
        return None
    from trainers.task_sft.recipe import SFTRecipe, load_sft_recipe

    recipe = load_sft_recipe(args.sft_recipe) if args.sft_recipe is not None else SFTRecipe()
    return recipe.model_dump(mode="json")


def _rubric_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """--grader-prompt / --partial-rubrics: RunConfig.rubric (the prompt by contents, checked now)."""
    if args.grader_prompt is None and not args.partial_rubrics and not args.grader_structured:
        return None
    prompt = None
    if args.grader_prompt is not None:
        from harness.errors import ConfigError
        from harness.scoring.rubric_grading import parse_grader_prompt

        path = Path(args.grader_prompt)
        if not path.is_file():
            raise ConfigError("no such grader prompt file", file=str(path))
        text = path.read_text(encoding="utf-8")
        parse_grader_prompt(text, str(path))
        prompt = {"source": str(path), "text": text}
    if args.grader_structured:
        bad = [b for b in (args.grader_backend or ["hf"]) if b != "openai"]
        if bad:
            raise HarnessError(f"--grader-structured needs every grader on --grader-backend openai (a server that "
                               f"enforces the reply's JSON schema: vLLM, llama.cpp, OpenAI), got {', '.join(bad)}")
    return {"grader_prompt": prompt, "partial": args.partial_rubrics,
            **({"structured": True} if args.grader_structured else {})}


def _write_cost(folder: Path, price_table: Path) -> str:
    """RUN/cost.json: the tokens each task's samples record per model role, priced."""
    import json

    from harness.run.folder import RunFolder
    from harness.scoring.cost import load_price_table, run_usage

    run = RunFolder(folder)
    record = json.loads(run.record_path.read_text(encoding="utf-8"))
    return write_cost(folder / "cost.json", run_usage(record, run.read_samples()), load_price_table(price_table),
                      no_tokens="no task of this run records its tokens per sample")


def _protocol(args: argparse.Namespace) -> str | None:
    """--responses ideal grades the stored physician completions: protocol rubric_ideal."""
    if args.responses != "ideal":
        return str(args.protocol) if args.protocol else None
    if args.protocol not in (None, "rubric_ideal"):
        raise HarnessError(f"--responses ideal grades stored completions; it cannot go with --protocol {args.protocol}")
    return "rubric_ideal"


def _ray_options(args: argparse.Namespace) -> Any:
    """--executor ray: its RayOptions (Ray imported now, so a missing extra is one line up front);
    None for --executor local, which refuses the Ray-only options."""
    ray_only = {"--ray-address": args.ray_address, "--shards": args.shards,
                "--gpus-per-shard": args.gpus_per_shard, "--cpus-per-shard": args.cpus_per_shard}
    if args.executor != "ray":
        given = [flag for flag, value in ray_only.items() if value is not None]
        if given:
            raise HarnessError(f"{', '.join(given)} need --executor ray")
        return None
    from harness.protocols.sft import is_sft
    from harness.run.executors import RayOptions, require_ray

    require_ray()
    if args.shard is not None:
        raise HarnessError("--executor ray shards the run itself: use --shards N instead of --shard I/N")
    if is_sft(args.protocol):
        raise HarnessError("--protocol sft runs with --executor local only")
    return RayOptions(address=args.ray_address, shards=args.shards, gpus_per_shard=args.gpus_per_shard,
                      cpus_per_shard=1.0 if args.cpus_per_shard is None else args.cpus_per_shard,
                      max_retries=args.ray_max_retries)


def cmd_run(args: argparse.Namespace) -> int:
    from harness.protocols.sft import is_sft
    from harness.run.config import RunConfig
    from harness.run.report import format_record
    from harness.run.runner import Runner
    from harness.types import stable_hash

    ray_options = _ray_options(args)  # before any work: a missing extra fails at once
    from harness.run.threads import apply_threads

    apply_threads(args.threads)
    tasks = split_list(args.tasks)
    model_args = backend_args(args, args.model_args)
    fields: dict[str, Any] = dict(
        model=args.model, backend=args.backend, model_args=model_args,
        batch_size=args.batch_size, suite=args.suite, tasks=tasks, protocol=_protocol(args),
        num_fewshot=args.num_fewshot, seed=args.seed, limit=args.limit,
        data_source=args.data_source, data_dir=args.data_dir,
        cache=None if args.no_cache else (args.cache or default_cache()),
        task_dirs=tuple(args.include_tasks or ()), shard=args.shard, max_attempts=args.max_attempts,
        lmeval_include=args.lmeval_include, aux_models=_aux_models(args), sft_recipe=_sft_recipe(args),
        rubric=_rubric_options(args),
        **({"dedup": True} if args.dedup else {}), **({"truncate": args.truncate} if args.truncate else {}),
        **({"allow_unpinned": True} if args.allow_unpinned else {}),
    )
    if args.extractor:  # --extractor model without --extractor-model: the embedded default model reads
        fields["extractor"] = args.extractor
        if args.extractor == "model":
            fields["aux_models"].setdefault("extractor", {"model": None, "backend": "hf", "model_args": {}})
    output = args.output
    if output is None:
        # Deterministic default: rerunning the same command resumes the same run.
        probe = RunConfig(**fields, output=Path("."))
        label = args.suite or "-".join(tasks)[:40] or "run"
        model = Path(args.model).name if args.model else "default"
        output = Path("runs") / f"{label}-{model}-{stable_hash(probe.identity())[:8]}"
    config = RunConfig(**fields, output=output)
    progress = None if args.quiet else progress_bar
    if is_sft(config.protocol):  # fine-tune per task, then score: the trainers' flow
        from trainers.task_sft.flow import run_sft

        record = run_sft(config, progress=progress)
    elif ray_options is not None:  # the shards as Ray tasks, merged into one record
        from harness.run.executors import run_on_ray

        record = run_on_ray(config, ray_options, progress=progress)
    else:
        record = Runner(config, progress=progress).run()
    print(format_record(record))
    for line in jury_lines(record):
        print(line)
    print(f"record: {config.output / 'run.json'}")
    if args.price_table is not None:
        print(_write_cost(config.output, args.price_table))
    if args.store:
        from leaderboard.store import Store

        with Store(args.store) as store:
            outcome = store.import_run(config.output)
        print(f"store: {'added' if outcome.added else 'already held'} run {outcome.run_id} in {store.url}")
    return unscored_status(record, args.allow_unscored)


def jury_lines(record: Any) -> list[str]:
    """Per rubric task graded by a jury: each grader's own score and counts, the agreement, and
    graders of the candidate's family (the table shows the jury's mean as rubric_score)."""
    from harness.scoring.intervals import format_value_ci

    lines = []
    for key, res in record.tasks.items():
        jury = ((res.metrics.get("rubric_score") or {}).get("details") or {}).get("jury")
        if not jury:
            continue
        parts = []
        for role, g in jury["graders"].items():
            m = g["rubric_score"]
            parts.append(f"{role} {format_value_ci(m['value'], *m['ci'])} ({g['n_ungraded_items']} of "
                         f"{g['n_items']} items ungraded, {g['n_failed_requests']} failed requests)")
        alpha = jury["krippendorff_alpha"]
        line = (f"{key}: a jury of {len(parts)} graders (rubric_score is their mean): {'; '.join(parts)}; "
                f"Krippendorff's alpha (nominal, {jury['alpha_units']} items): "
                f"{'n/a' if alpha is None else f'{alpha:.3f}'}")
        flags = (res.extra.get("jury") or {}).get("same_family_as_candidate") or []
        if flags:
            line += "; same family as the candidate: " + ", ".join(
                f"{f['grader']} ({'/'.join(f['families'])})" for f in flags)
        lines.append(line)
    return lines


def unscored_status(record: Any, allow_unscored: bool) -> int:
    """EXIT_UNSCORED when a sample had a failed request (unscored, or a rubric example scored on its
    graded items), unless the user accepts it; 0 otherwise."""
    from harness.run.report import failed_request_counts

    failed = failed_request_counts(record)
    if not failed or allow_unscored:
        return 0
    import sys

    total = sum(failed.values())
    print(f"error: {total} sample(s) with a failed request in {len(failed)} task(s) (unscored, or scored on part "
          f"of a rubric with --partial-rubrics); exit status {EXIT_UNSCORED} (pass --allow-unscored to accept; "
          "rerun the same command to ask the failed requests again)", file=sys.stderr)
    return EXIT_UNSCORED


# The exit status of a run that left samples unscored because requests failed: distinct from 1
# (a regression, `harness compare`) and 2 (a usage or input error).
EXIT_UNSCORED = 3


def cmd_merge(args: argparse.Namespace) -> int:
    from harness.run.merge import merge_runs
    from harness.run.report import format_record

    record = merge_runs([Path(p) for p in args.runs], args.output)
    print(format_record(record))
    print(f"record: {args.output / 'run.json'}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from harness.run.catalog import load_catalog

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
    from harness.run.folder import RunFolder
    from harness.run.records import read_record
    from harness.run.report import format_record, partial_lines

    record = read_record(Path(args.run))
    print(format_record(record))
    for line in jury_lines(record):
        print(line)
    folder = RunFolder(Path(args.run))
    if record.status != "finished" and folder.samples_path.is_file():  # what a partial run has scored
        for line in partial_lines(record, folder.read_samples()):
            print(line)
    return 0


def cmd_export_lmeval(args: argparse.Namespace) -> int:
    from harness.run.lmeval_export import export_lmeval

    tasks = list(split_list(args.tasks)) or None
    source = args.data_source or ("local" if args.data_dir else "bundled")
    exported = export_lmeval(args.out_dir, tasks, source, args.data_dir, args.limit)  # type: ignore[arg-type]
    for e in exported:
        print(f"{e.lm_task}: {e.n_samples} samples ({source}) -> {e.yaml}")
    print(f"run them with: lm_eval --model hf --model_args pretrained=MODEL --include_path {args.out_dir} "
          f"--tasks {','.join(e.lm_task for e in exported)}")
    return 0


def add_commands(sub: Any) -> None:
    """Register the commands on the top-level subparsers."""
    run = sub.add_parser("run", help="score a model on tasks or a suite")
    run.add_argument("--model", help="local folder or HF hub id (default: embedded SmolLM2-135M)")
    run.add_argument("--backend", default="hf", help="hf, vllm or openai (default: hf)")
    run.add_argument("--base-url", help="openai backend: the server, e.g. http://127.0.0.1:8000/v1")
    run.add_argument("--api-key-env", help="openai backend: NAME of the environment variable holding the key")
    run.add_argument("--concurrency", type=int, help="openai backend: requests in flight (default 8)")
    run.add_argument("--timeout", type=float, help="openai backend: seconds per request (default 60)")
    run.add_argument("--model-args", help="backend arguments, e.g. dtype=bfloat16,device=cuda")
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--threads", type=int, help="torch CPU threads (default: OMP_NUM_THREADS, else the usable "
                     "cores minus the current load, at least 1); recorded in run.json")
    run.add_argument("--suite", help="suite name (see `harness tasks`)")
    run.add_argument("--tasks", help="comma-separated task ids; lm_eval:NAME runs lm-eval's task NAME")
    run.add_argument("--protocol", help="loglik, loglik_text, generate, cot, sc@K, voc (default: per task); "
                     "sft / sft+NAME: fine-tune on each task's train split, then score with the task's "
                     "default protocol / NAME")
    run.add_argument("--sft-recipe", type=Path, help="--protocol sft: fine-tuning recipe YAML (method, max_steps, "
                     "learning_rate, ...; default: LoRA, 30 steps)")
    run.add_argument("--extractor", help="answer extractor of every generative MCQA task (choice, last_answer, "
                     "model: the rule, then the --extractor-model where the rule is unsure; default: per task)")
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
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local (default): this process; ray: the shards as Ray tasks, merged into one "
                     "record (pip install 'medllm-harness[ray]'; OUTPUT must be on a path all nodes share)")
    run.add_argument("--ray-address", help="--executor ray: the cluster, auto or ray://HOST:PORT (default: "
                     "RAY_ADDRESS, else a new local cluster)")
    run.add_argument("--shards", type=int, help="--executor ray: number of shards (default: the cluster's GPUs "
                     "divided by --gpus-per-shard; 1 on a CPU-only cluster)")
    run.add_argument("--gpus-per-shard", type=float, help="--executor ray: GPUs per shard task (default: 1 on "
                     "a cluster with GPUs, else 0); vLLM's tensor_parallel_size takes them from the task")
    run.add_argument("--cpus-per-shard", type=float, help="--executor ray: CPUs per shard task (default 1)")
    run.add_argument("--ray-max-retries", type=int, default=3,
                     help="--executor ray: retries of a shard whose worker or node died (default 3)")
    run.add_argument("--dedup", action="store_true",
                     help="score each exact duplicate record of a data file once (default: both, with a warning)")
    run.add_argument("--allow-unpinned", action="store_true",
                     help="read a url data source that has no pinned checksum, with a warning giving the sha256 "
                     "read (default: refuse; or MEDLLM_HARNESS_ALLOW_UNPINNED=1)")
    run.add_argument("--truncate", choices=["left", "middle"],
                     help="cut prompts longer than the model's context (default: leave those samples unscored)")
    run.add_argument("--allow-unscored", action="store_true",
                     help=f"exit 0 even when requests failed (default: exit {3} when any sample is unscored "
                     "because its request failed)")
    run.add_argument("--max-attempts", type=int, default=4,
                     help="tries per request before its sample is unscored (default 4)")
    run.add_argument("--grader-prompt", type=Path, help="rubric tasks: the grader's prompt file (a .yaml like "
                     "tasks/prompts/rubric_grader.yaml, or a plain-text template with <<conversation>> and "
                     "<<rubric_item>>, e.g. upstream's); its hash enters the grader fingerprint")
    run.add_argument("--grader-structured", action="store_true",
                     help="rubric tasks: the grader's server enforces the reply's JSON schema (openai backend; "
                     "llama.cpp's server also needs --grader-args response_format=json_object)")
    run.add_argument("--partial-rubrics", action="store_true", help="rubric tasks: score an example whose grader "
                     "replies did not all parse on its graded items (default: leave it unscored)")
    run.add_argument("--responses", choices=["model", "ideal"], default="model", help="rubric tasks: grade the "
                     "model's responses, or the physicians' stored ideal completions (protocol rubric_ideal)")
    run.add_argument("--price-table", type=Path, help="USD per million tokens per model name (YAML or JSON): "
                     "write the run's token cost per model role to RUN/cost.json")
    run.add_argument("--store", help="after the run, import it into this results store (SQLite path or "
                     "SQLAlchemy URL)")
    for role, what in AUX_ROLES:
        flag = role.replace("_", "-")
        if role in JURY_ROLES:
            jury = (" Repeat for a jury: each grades every item; --grader-backend / --grader-args given once apply "
                    "to every grader, given once per --grader-model pair with them in order")
            run.add_argument(f"--{flag}-model", action="append",
                             help=f"{what}: its model ('default' = the embedded model).{jury}")
            run.add_argument(f"--{flag}-backend", action="append",
                             help=f"backend of the {flag} model: hf, vllm or openai (default: hf)")
            run.add_argument(f"--{flag}-args", action="append", help=f"backend arguments of the {flag} model, "
                             "e.g. base_url=http://127.0.0.1:8000/v1,api_key_env=MY_KEY_VAR")
            continue
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
