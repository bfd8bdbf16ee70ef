"""`--protocol sft`: task-specific supervised fine-tuning, then scoring, in one run.

Per task: its train split, formatted by the task's own prompt (trainers.task_sft.examples), fine-tunes
the base model (LoRA by default; trainers.task_sft.train), and the tuned checkpoint is scored on the
task's test split with the task's default protocol (or NAME of `sft+NAME`). Everything that can
refuse runs first, for every task, before any training: a task without a train split, a scoring
protocol that cannot be trained on, a test item in the train data (trainers.task_sft.leakage).

The run folder holds, beside config.json / samples.jsonl / run.json:
  sft/<task>-<key>/train.jsonl          the formatted training examples, in training order
  sft/<task>-<key>/stage.json           steps, losses, wall time (the trainers' StageResult)
  sft/<task>-<key>/model/ [adapter/]    the tuned checkpoint (a LoRA adapter merged into its base)
  sft/<task>-<key>/heldin_loss.json     response loss of held-in train examples, base and tuned
<key> hashes recipe, base model and training data: a rerun reuses a finished checkpoint (no
retraining) and resumes the scoring from samples.jsonl; an interrupted training resumes from its
last trainer checkpoint.

The record's model is the base model (its leaderboard row); each task's result carries protocol
`sft+<protocol>`, and `extra.sft` the recipe, its hash, the training data fingerprint, the
leakage check, the losses and the checkpoint.
"""

from __future__ import annotations

import json
import random
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.backends.stack import open_stack
from harness.data.sources import SourceKind, load_split
from harness.errors import HarnessError
from harness.protocols.sft import SFTProtocol, scoring_protocol
from harness.run.aggregate import task_result
from harness.run.catalog import Catalog, load_catalog
from harness.run.config import RunConfig
from harness.run.execution import ProgressFactory, check_capabilities, execute_task
from harness.run.folder import RunFolder
from harness.run.planning import TaskPlan, plan_task, resolve_tasks
from harness.run.records import RunRecord, TaskResult, environment
from harness.run.runner import finish, new_record, open_aux_models
from harness.types import ModelBackend, TaskKey, stable_hash
from trainers.task_sft.examples import (
    TrainExample,
    build_examples,
    example_builder,
    examples_fingerprint,
    tokenize_example,
)
from trainers.task_sft.leakage import LeakReport, find_leaks
from trainers.task_sft.recipe import SFTRecipe, recipe_from_data

TRAIN_SPLIT = "train"
# Backends that score a local checkpoint folder (a remote server cannot load the tuned weights).
SFT_BACKENDS = ("hf", "vllm")


@dataclass
class SFTTask:
    """One task, checked and formatted, ready to train."""

    plan: TaskPlan
    train_source: str
    n_train_items: int
    examples: list[TrainExample]
    rows: list[dict[str, list[int]]]
    dropped_too_long: int
    leaks: LeakReport
    dropped_leaked: int
    data_fingerprint: str
    key: str

    def folder(self, out: Path) -> Path:
        return out / "sft" / f"{self.plan.spec.task}-{self.key[:12]}"


def recipe_of(config_recipe: dict[str, Any] | None) -> SFTRecipe:
    return SFTRecipe() if config_recipe is None else recipe_from_data(config_recipe, "run config sft_recipe")


def _draw(samples: list[Any], recipe: SFTRecipe) -> list[Any]:
    """A seeded draw of at most max_train_examples, in a seeded order."""
    order = list(samples)
    random.Random(recipe.seed).shuffle(order)
    return order[: recipe.max_train_examples] if recipe.max_train_examples else order


def prepare_task(config: RunConfig, catalog: Catalog, name: str, protocol_name: str | None, source: SourceKind,
                 recipe: SFTRecipe, tokenizer: Any, base_fingerprint: str) -> SFTTask:
    if ":" in name:
        raise HarnessError(f"task {name!r}: --protocol sft needs a harness task with a train split")
    spec = catalog.task(name)
    if TRAIN_SPLIT not in spec.splits:
        raise HarnessError(
            f"task {name!r} has no train split (its splits: {', '.join(sorted(spec.splits))}); "
            "--protocol sft fine-tunes on a task's train split")
    try:
        train = load_split(spec, TRAIN_SPLIT, source, config.data_dir)
    except HarnessError as exc:
        raise HarnessError(f"task {name!r}: cannot load its train split ({source}): {exc}") from None
    inner = scoring_protocol(config.protocol or "sft")
    plan = plan_task(spec, config.model_copy(update={"protocol": inner}), source, protocol_name)
    example_builder(plan.protocol, name)
    test = load_split(spec, spec.eval_split, source, config.data_dir)  # all of it, whatever --limit

    leaks = find_leaks(plan.ctx.format, train, test, recipe.leakage)
    if leaks.leaks and recipe.leakage.on_leak == "refuse":
        first = leaks.leaks[0]
        raise HarnessError(
            f"task {name!r}: {len(leaks.test_ids)} test item(s) of split {spec.eval_split!r} are in its train "
            f"data (e.g. test {first.test_id} in train {first.train_id}, {first.how}); fix the data, or set "
            "`leakage: {on_leak: drop}` in --sft-recipe to train without the "
            f"{len(leaks.train_ids)} train item(s) holding them")
    kept = [s for s in train if s.id not in leaks.train_ids]
    examples = build_examples(plan.protocol, _draw(kept, recipe), plan.ctx, name)
    rows: list[dict[str, list[int]]] = []
    used: list[TrainExample] = []
    for ex in examples:
        row = tokenize_example(ex, tokenizer)
        if row is not None and len(row["input_ids"]) <= recipe.max_length:
            rows.append(row)
            used.append(ex)
    if not rows:
        raise HarnessError(f"task {name!r}: no training example fits max_length {recipe.max_length}")
    data_fp = examples_fingerprint(used)
    identity = {"recipe": recipe.fingerprint(), "train_data": data_fp}
    sft_protocol = SFTProtocol(plan.protocol, identity)
    n_shot = plan.ctx.n_shot
    plan = replace(plan, protocol=sft_protocol, key=str(TaskKey(spec.task, sft_protocol.label(plan.ctx), n_shot)))
    key = stable_hash({**identity, "base_model": base_fingerprint})
    return SFTTask(plan, source, len(train), used, rows, len(examples) - len(rows), leaks,
                   len(train) - len(kept), data_fp, key)


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("torch", "transformers", "peft", "trl"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


class _StepBar:
    """Training steps on the run's progress bar (a tqdm-like object)."""

    def __init__(self, bar: Any):
        self.bar = bar
        self.step = 0

    def __call__(self, step: int, max_steps: int, loss: float) -> None:
        self.bar.update(step - self.step)
        self.step = step
        if hasattr(self.bar, "set_postfix_str"):
            self.bar.set_postfix_str(f"loss {loss:.4f}")


def train_task(task: SFTTask, base: Path, recipe: SFTRecipe, out: Path, progress: Any) -> dict[str, Any]:
    """Train (or reuse) the task's checkpoint; returns `extra.sft` of its record."""
    from harness.backends.fingerprint import folder_fingerprint
    from trainers.task_sft.train import response_loss, train_checkpoint

    folder = task.folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    reused = (folder / "stage.json").is_file()
    examples_file = folder / "train.jsonl"
    if not examples_file.is_file():
        tmp = examples_file.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in task.examples),
                       encoding="utf-8")
        tmp.replace(examples_file)
    name = task.plan.spec.task
    bar = None if reused or progress is None else progress(f"{name} fine-tune ({recipe.method})", recipe.max_steps, 0)
    try:
        stage = train_checkpoint(base, task.rows, recipe, folder, name, _StepBar(bar) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    tuned = Path(stage["model_dir"])
    loss_file = folder / "heldin_loss.json"
    if loss_file.is_file():
        heldin = json.loads(loss_file.read_text(encoding="utf-8"))
    else:
        held = task.rows[: recipe.loss_examples]
        heldin = {"examples": len(held), "before": response_loss(base, held), "after": response_loss(tuned, held)}
        loss_file.write_text(json.dumps(heldin, indent=2), encoding="utf-8")
    return {
        "recipe": recipe.model_dump(mode="json"), "recipe_hash": recipe.fingerprint(),
        "train_split": TRAIN_SPLIT, "train_source": task.train_source, "train_items": task.n_train_items,
        "train_examples": len(task.rows), "dropped_leaked": task.dropped_leaked,
        "dropped_too_long": task.dropped_too_long, "train_data_fingerprint": task.data_fingerprint,
        "train_examples_file": str(folder / "train.jsonl"),
        "leakage": task.leaks.to_json(recipe.leakage),
        "base_model": str(base), "base_model_fingerprint": folder_fingerprint(base),
        "checkpoint": str(tuned), "checkpoint_fingerprint": folder_fingerprint(tuned),
        "adapter": stage.get("adapter_dir"), "reused_checkpoint": reused,
        "method": stage["method"], "steps": stage["steps"], "train_wall_s": stage["wall_s"],
        "trainable_params": stage["trainable_params"], "total_params": stage["total_params"],
        "train_loss": stage["train_loss"], "logged_losses": stage["losses"],
        "heldin_loss": heldin, "seed": recipe.seed, "versions": _versions(),
    }


def base_fingerprint_of(backend: ModelBackend, tuned: Path, base: Path) -> tuple[str, dict[str, Any]]:
    """The run's model is the base model: the tuned backend's fingerprint and info with the tuned
    folder swapped for the base folder (backends fingerprint a folder plus the arguments that
    change outputs)."""
    from harness.backends.fingerprint import folder_fingerprint

    tuned_fp, base_fp = folder_fingerprint(tuned), folder_fingerprint(base)
    fingerprint = backend.fingerprint()
    if tuned_fp not in fingerprint:
        raise HarnessError(f"backend {backend.name!r} does not fingerprint a model folder; --protocol sft "
                           f"needs one of: {', '.join(SFT_BACKENDS)}")
    fingerprint = fingerprint.replace(tuned_fp, base_fp)
    info = {k: (str(base) if v == str(tuned) else v) for k, v in backend.info().items()}
    info["fingerprint"] = fingerprint
    return fingerprint, info


def run_sft(config: RunConfig, *, catalog: Catalog | None = None, progress: ProgressFactory | None = None,
            chunk_size: int | None = None, retry_base_delay: float = 1.0) -> RunRecord:
    """The run of `--protocol sft` / `sft+NAME`: train per task, then score the tuned checkpoint."""
    from harness.backends.fingerprint import folder_fingerprint
    from harness.backends.hf import resolve_model_path
    from trainers.stages.common import load_tokenizer

    if config.backend not in SFT_BACKENDS:
        raise HarnessError(f"--protocol sft trains local weights; backend {config.backend!r} cannot score them "
                           f"(use one of: {', '.join(SFT_BACKENDS)})")
    if config.num_fewshot:
        raise HarnessError("--protocol sft scores the fine-tuned model zero-shot; drop --num-fewshot")
    catalog = catalog or load_catalog(config.task_dirs)
    chunk = chunk_size or max(8, config.batch_size * 4)
    recipe = recipe_of(config.sft_recipe)
    entries, source = resolve_tasks(config, catalog)
    base = resolve_model_path(config.model, config.model_args.get("revision"))
    base_fp = folder_fingerprint(base)
    tokenizer = load_tokenizer(base)
    # Everything that can refuse, for every task, before any training.
    tasks = [prepare_task(config, catalog, name, p, source, recipe, tokenizer, base_fp) for name, p in entries]
    keys = [t.plan.key for t in tasks]
    if len(set(keys)) < len(keys):
        raise HarnessError(f"task {next(k for k in keys if keys.count(k) > 1)} is listed twice")
    folder = RunFolder(config.output)
    folder.claim(config.identity())
    out = folder.path
    plans = [t.plan for t in tasks]
    args = {k: v for k, v in config.model_args.items() if k != "revision"}  # the tuned folder is local
    record: RunRecord | None = None
    cache_stats: dict[str, int] = {}
    with ExitStack() as resources:
        aux, aux_info = open_aux_models(config, plans, resources, base_delay=retry_base_delay)
        sample_log = resources.enter_context(folder.sample_log())
        try:
            for task in tasks:
                started = time.monotonic()
                sft_info = train_task(task, base, recipe, out, progress)
                tuned = Path(sft_info["checkpoint"])
                with open_stack(config.backend, str(tuned), batch_size=config.batch_size, model_args=args,
                                max_attempts=config.max_attempts, base_delay=retry_base_delay,
                                cache=config.cache) as model:
                    check_capabilities(model.model, [task.plan])
                    if record is None:
                        fingerprint, info = base_fingerprint_of(model.model, tuned, base)
                        record = new_record(folder, config, fingerprint, info, {**environment(), **_versions()})
                        folder.write_record(record)
                    execute_task(task.plan, {None: model.top, **aux}, sample_log, chunk_size=chunk,
                                 progress=progress)
                    for k, v in model.cache_stats().items():
                        cache_stats[k] = cache_stats.get(k, 0) + v
                result: TaskResult = task_result(task.plan, sample_log, time.monotonic() - started, aux_info)
                result.extra["sft"] = sft_info
                record.tasks[task.plan.key] = result
                if config.cache is not None:
                    record.cache = {"path": str(config.cache), **cache_stats}
                folder.write_record(record)
            assert record is not None
            finish(record, plans, sample_log)
            folder.write_record(record)
        except BaseException:
            if record is not None:
                record.status = "failed"
                folder.write_record(record)
            raise
    return record
