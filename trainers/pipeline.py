"""Run a recipe: score the base model, then for each stage prepare its data, train from the
previous checkpoint, score the new checkpoint and compare it with the previous one.

The output folder holds everything and makes a rerun resume:
  recipe.json                  the resolved recipe and overrides (a rerun must match it)
  base/eval/                   the base model's harness run
  <stage>/data_report.json     what data processing read, dropped and masked (counts, ids)
  <stage>/checkpoints/         trainer checkpoints while the stage runs (resume point)
  <stage>/model/ [adapter/]    the stage's checkpoint (LoRA merged into its base)
  <stage>/stage.json           losses, steps, wall time, metrics
  <stage>/eval/, compare.*     the harness run of the checkpoint and its paired comparison
  report.json                  all of the above in one summary
A finished stage (stage.json) is not retrained; an interrupted one resumes from its last
checkpoint; an interrupted harness run resumes from its samples.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.types import TaskKey
from trainers.data.pipeline import prepare_records
from trainers.data.records import record_to_json
from trainers.recipe import Recipe, StageSpec
from trainers.stages.common import Progress, StageInput, StageResult

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """What the command line can override, on top of the recipe."""

    output: Path | None = None
    data_dir: Path | None = None
    max_steps: int | None = None
    eval_limit: int | None = None
    no_eval: bool = False
    train_overrides: dict[str, Any] = field(default_factory=dict)  # applied to every stage

    def stage_overrides(self) -> dict[str, Any]:
        out = dict(self.train_overrides)
        if self.max_steps is not None:
            out["max_steps"] = self.max_steps
        return out


def output_dir(recipe: Recipe, options: TrainOptions) -> Path:
    if options.output is not None:
        return options.output.expanduser().resolve()
    if recipe.output:
        return Path(recipe.output).expanduser().resolve()
    return (Path("runs") / "train" / recipe.recipe).resolve()


def data_dir(recipe: Recipe, options: TrainOptions) -> Path | None:
    raw = options.data_dir or (Path(recipe.data_dir) if recipe.data_dir else None)
    return raw.expanduser().resolve() if raw is not None else None


def _identity(recipe: Recipe, options: TrainOptions, data: Path | None) -> dict[str, Any]:
    return {"recipe": recipe.model_dump(mode="json"), "data_dir": str(data) if data else None,
            "overrides": options.stage_overrides(), "eval_limit": options.eval_limit, "no_eval": options.no_eval}


def _check_identity(out: Path, identity: dict[str, Any]) -> None:
    path = out / "recipe.json"
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != identity:
            diff = sorted(k for k in {*previous, *identity} if previous.get(k) != identity.get(k))
            raise HarnessError(f"{out} holds a training run with other settings ({', '.join(diff)}); "
                               "use another --output or delete that folder")
    else:
        path.write_text(json.dumps(identity, indent=2), encoding="utf-8")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def _train_stage(stage: StageSpec, index: int, recipe: Recipe, model_in: Path, stage_dir: Path,
                 data: Path | None, options: TrainOptions, callbacks: Sequence[Any],
                 progress: Progress | None) -> StageResult:
    from trainers.configs import build_config
    from trainers.stages import STAGES

    recipe_dir = Path(recipe.source_file).parent if recipe.source_file else None
    records, report = prepare_records(stage.kind, stage.data, stage.filters, data, recipe_dir)
    _write_json(stage_dir / "data_report.json", report.to_json())
    if not records:
        raise HarnessError(f"stage {stage.name}: no training records left after filtering "
                           f"(see {stage_dir / 'data_report.json'})")
    with (stage_dir / "data.jsonl").open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(record_to_json(rec), ensure_ascii=False) + "\n")
    if progress is not None:
        progress(f"[{stage.name}] {report.kept} {stage.kind} records "
                 f"(read {sum(report.read.values())}, leaked {report.leakage.get('dropped', 0)}, "
                 f"duplicates {sum(report.duplicates.values())})")
    config = build_config(stage.kind, stage_dir / "checkpoints", {**stage.train, **options.stage_overrides()},
                          seed=recipe.seed, file=recipe.source_file, key=f"stages.{index}.train")
    inp = StageInput(name=stage.name, kind=stage.kind, model_in=model_in, out_dir=stage_dir, config=config,
                     records=records, merge=stage.merge, callbacks=callbacks, progress=progress)
    return STAGES.get(stage.kind)(inp)


def run_recipe(recipe: Recipe, options: TrainOptions | None = None, *, callbacks: Sequence[Any] = (),
               progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) every stage of `recipe`; returns the report also written to report.json."""
    from harness.backends.hf import resolve_model_path
    from trainers.evaluate import compare_stage, comparison_json, score_checkpoint, summarize, write_comparison

    options = options or TrainOptions()
    out = output_dir(recipe, options)
    data = data_dir(recipe, options)
    out.mkdir(parents=True, exist_ok=True)
    _check_identity(out, _identity(recipe, options, data))
    started = time.monotonic()
    evaluate = recipe.eval if not options.no_eval else None
    model = resolve_model_path(recipe.base_model)
    report: dict[str, Any] = {"recipe": recipe.recipe, "version": recipe.version, "base_model": str(model),
                              "output": str(out), "data_dir": str(data) if data else None, "stages": []}

    prev_eval: Path | None = None
    if evaluate is not None and evaluate.baseline:
        if progress is not None:
            progress("[base] scoring the base model")
        base_eval = out / "base" / "eval"
        base_eval.parent.mkdir(parents=True, exist_ok=True)
        record = score_checkpoint(model, evaluate, base_eval, data, limit=options.eval_limit, seed=recipe.seed)
        report["base"] = {"eval": summarize(record), "eval_dir": str(base_eval)}
        prev_eval = base_eval

    for index, stage in enumerate(recipe.stages):
        stage_dir = out / stage.name
        stage_dir.mkdir(parents=True, exist_ok=True)
        done = stage_dir / "stage.json"
        if done.exists():
            result = StageResult.from_json(json.loads(done.read_text(encoding="utf-8")))
            if progress is not None:
                progress(f"[{stage.name}] already trained ({result.steps} steps); reusing {result.model_dir}")
        else:
            result = _train_stage(stage, index, recipe, model, stage_dir, data, options, callbacks, progress)
            gc.collect()  # the trainer's model, optimizer and reference copies before scoring loads another
            _write_json(done, result.to_json())
            if not stage.keep_checkpoints:
                shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)
        entry: dict[str, Any] = {"name": stage.name, "kind": stage.kind, "start": str(model),
                                 "result": result.to_json()}
        data_report = stage_dir / "data_report.json"
        if data_report.exists():
            entry["data"] = json.loads(data_report.read_text(encoding="utf-8"))
        if stage.kind != "reward":  # a reward model is a side product; the chain goes on from `model`
            model = Path(result.model_dir)
            if evaluate is not None and stage.evaluate:
                if progress is not None:
                    progress(f"[{stage.name}] scoring {model}")
                eval_dir = stage_dir / "eval"
                record = score_checkpoint(model, evaluate, eval_dir, data, limit=options.eval_limit, seed=recipe.seed)
                entry["eval"] = summarize(record)
                entry["eval_dir"] = str(eval_dir)
                if prev_eval is not None:
                    cmp = compare_stage(prev_eval, eval_dir, evaluate)
                    write_comparison(cmp, stage_dir)
                    entry["comparison"] = comparison_json(cmp)
                prev_eval = eval_dir
        report["stages"].append(entry)
        _write_json(out / "report.json", report)
    report["final_model"] = str(model)
    report["wall_s"] = round(time.monotonic() - started, 1)
    _write_json(out / "report.json", report)
    return report


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def format_report(report: dict[str, Any]) -> str:
    """A terminal summary: per stage its losses, data counts, scores and comparison verdicts."""
    lines = [f"recipe {report['recipe']} -> {report['output']}"]
    if "base" in report:
        base_tasks = report["base"]["eval"]["tasks"].items()
        scores = ", ".join(f"{TaskKey.parse(k).task} {_num(v['value'])}" for k, v in base_tasks)
        lines.append(f"  base: {scores}")
    for st in report["stages"]:
        res = st["result"]
        data = st.get("data", {})
        lines.append(
            f"  {st['name']} ({st['kind']}, {res['method']}): {res['steps']} steps in {res['wall_s']:.0f}s, "
            f"loss {_num(res.get('first_loss'))} -> {_num(res.get('last_loss'))}, "
            f"{data.get('kept', '?')} records (leaked {data.get('leakage', {}).get('dropped', 0)})"
        )
        if res.get("metrics", {}).get("heldout_accuracy") is not None:
            lines.append(f"    reward model: held-out pairwise accuracy "
                         f"{_num(res['metrics'].get('heldout_accuracy_before'))} -> "
                         f"{_num(res['metrics']['heldout_accuracy'])}")
        for t in st.get("comparison", {}).get("tasks", []):
            p = "n/a" if t["p_value"] is None else f"{t['p_value']:.3f}"
            lines.append(f"    {TaskKey.parse(t['task_key']).task:<28} {_num(t['base'])} -> {_num(t['new'])}  "
                         f"p={p}  {t['verdict']}")
    if "final_model" in report:
        lines.append(f"final model: {report['final_model']} ({report.get('wall_s', 0):.0f}s)")
    return "\n".join(lines)
