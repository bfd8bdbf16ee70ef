"""Run lm-eval tasks through our runner, backends, cache and records (`--tasks lm_eval:NAME`).

lm-eval's own task machinery (TaskManager, its prompts, filters and `process_results`) builds
the requests and scores each document; our runner sends the requests (batched per kind, cached,
retried, resumable, shardable) and records per-document scores. A task's metrics are the means
of lm-eval's per-document values, with our confidence intervals; tasks with a metric lm-eval
aggregates otherwise (corpus BLEU, F1 over all documents) are refused up front, since a mean of
per-document values would be a different number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.data.spec import ProtocolSpec, SplitSources, TaskSpec
from harness.errors import HarnessError
from harness.protocols.base import EXTERNAL_TASKS, ExternalOptions, ExternalTask, PromptContext, Protocol
from harness.scoring.metrics import METRICS, Metric
from harness.types import (
    GenerationConfig,
    GenerationRequest,
    GenerationResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Request,
    RequestKind,
    Sample,
    Score,
    stable_hash,
)

PREFIX = "lm_eval:"


@dataclass
class DocPlan:
    doc: Any
    instances: list[Any]  # lm-eval Instances of this document, in order
    repeats: list[int]  # requests sent per instance


@dataclass
class LMEvalProtocol(Protocol):
    """Scores one lm-eval task's documents with the task's own filters and process_results."""

    task: Any = None
    task_name: str = ""
    docs: dict[str, DocPlan] = field(default_factory=dict)
    metric_names: tuple[str, ...] = ()
    record_extra: dict[str, Any] = field(default_factory=dict)

    name = "lm_eval"
    kind = RequestKind.LOGLIKELIHOOD
    metrics = ()

    def requests(self, sample: Sample, ctx: PromptContext) -> list[Request]:
        plan = self.docs[sample.id]
        out: list[Request] = []
        for inst, repeats in zip(plan.instances, plan.repeats, strict=True):
            out.extend(_to_requests(inst, repeats, ctx.seed))
        return out

    def score(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> Score:
        plan = self.docs[sample.id]
        pos = 0
        for inst, repeats in zip(plan.instances, plan.repeats, strict=True):
            chunk = results[pos:pos + repeats]
            pos += repeats
            inst.resps = [_to_lm_response(r) for r in chunk]
            inst.filtered_resps = {}
        for ensemble in self.task._filters:
            ensemble.apply(plan.instances)
        values: dict[str, float] = {}
        for key in plan.instances[0].filtered_resps:
            metrics = self.task.process_results(plan.doc, [i.filtered_resps[key] for i in plan.instances])
            for metric, value in metrics.items():
                values[_metric_name(metric, key)] = _as_float(value)
        main = values.get(self.metric_names[0]) if self.metric_names else None
        responses = [i.filtered_resps for i in plan.instances]
        return Score(main, metadata={"values": values, "filtered_resps": _jsonable(responses)})


def _metric_name(metric: str, filter_key: str) -> str:
    return metric if filter_key == "none" else f"{metric},{filter_key}"


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    # e.g. bleu's (reference, prediction) pairs: aggregated by lm-eval only, not per document
    raise HarnessError(f"lm-eval metric value {value!r} is not a per-document number: not supported")


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _to_requests(inst: Any, repeats: int, seed: int) -> list[Request]:
    if inst.request_type == "loglikelihood":
        context, continuation = inst.args
        return [LoglikelihoodRequest(context, continuation)] * repeats
    if inst.request_type == "generate_until":
        context, gen_kwargs = inst.args
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen_kwargs.get("temperature", 0.0) or 0.0)
        if not gen_kwargs.get("do_sample", temperature > 0):
            temperature = 0.0
        return [
            GenerationRequest(prompt=context, config=GenerationConfig(
                max_tokens=int(gen_kwargs.get("max_gen_toks", 256)), temperature=temperature,
                top_p=float(gen_kwargs.get("top_p", 1.0) or 1.0), stop=tuple(until),
                seed=seed + j if temperature > 0 else None,
            ))
            for j in range(repeats)
        ]
    raise HarnessError(f"lm-eval request type {inst.request_type!r} is not supported by the bridge "
                       "(loglikelihood and generate_until are)")


def _to_lm_response(result: Any) -> Any:
    if isinstance(result, LoglikelihoodResult):
        return (result.logprob, result.is_greedy)
    if isinstance(result, GenerationResult):
        return result.text
    raise HarnessError(f"unexpected result {result!r}")


def _leaf_tasks(task_dict: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in task_dict.items():
        if isinstance(value, dict):
            out.update(_leaf_tasks(value))
        else:
            out[str(getattr(key, "group_name", key))] = value
    return out


def load_lmeval_task(name: str, include_path: Path | None, num_fewshot: int) -> Any:
    """lm-eval's task object for NAME (a single task, not a group: list a group's tasks)."""
    try:
        from lm_eval.tasks import TaskManager, get_task_dict
    except ImportError:
        raise HarnessError("lm_eval: tasks need lm-eval: pip install 'lm-eval[hf]==0.4.13'") from None
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    if name not in manager.all_tasks:
        where = f" (include path {include_path})" if include_path else ""
        raise HarnessError(f"lm-eval knows no task {name!r}{where}")
    try:
        leaves = _leaf_tasks(get_task_dict([name], manager))
    except Exception as exc:  # lm-eval/datasets raise many types; the message is what matters
        raise HarnessError(f"lm-eval could not load task {name!r}: {type(exc).__name__}: {exc}") from None
    if len(leaves) != 1:
        raise HarnessError(f"lm_eval:{name} is a group of {len(leaves)} tasks; list them one by one: "
                           + ",".join(f"lm_eval:{t}" for t in sorted(leaves)))
    task = next(iter(leaves.values()))
    if num_fewshot:
        task.set_config(key="num_fewshot", value=num_fewshot)
    return task


def plan_lmeval(name: str, include_path: Path | None, num_fewshot: int, seed: int, limit: int | None
                ) -> tuple[TaskSpec, LMEvalProtocol, list[Sample]]:
    """A synthetic TaskSpec, the protocol and one Sample per lm-eval document."""
    import lm_eval

    task_name = name.removeprefix(PREFIX)
    task = load_lmeval_task(task_name, include_path, num_fewshot)
    task.set_fewshot_seed(seed=seed)
    task.build_all_requests(limit=limit, rank=0, world_size=1, cache_requests=False)
    by_doc: dict[int, list[Any]] = {}
    for inst in task.instances:
        by_doc.setdefault(int(inst.doc_id), []).append(inst)
    docs: dict[str, DocPlan] = {}
    samples: list[Sample] = []
    for doc_id in sorted(by_doc):
        insts = sorted(by_doc[doc_id], key=lambda i: i.idx)
        sid = f"{task_name}-{doc_id:06d}"
        docs[sid] = DocPlan(insts[0].doc, insts, [int(i.repeats or 1) for i in insts])
        samples.append(Sample(id=sid, input=str(insts[0].args[0]), metadata={
            "doc_id": doc_id, "doc_hash": stable_hash(_jsonable(insts[0].doc))}))
    not_mean = sorted(m for m, fn in task.aggregation().items() if getattr(fn, "__name__", "") != "mean")
    if not_mean:
        raise HarnessError(f"lm_eval:{task_name}: metrics {', '.join(not_mean)} are not means of per-document "
                           "values; the bridge supports mean-aggregated metrics only")
    higher = task.higher_is_better()
    filter_keys = [f.name for f in task._filters]
    metric_names = tuple(_metric_name(m, k) for k in filter_keys for m in task.aggregation())
    for metric in metric_names:
        if metric not in METRICS:
            base = metric.split(",")[0]
            METRICS.add(metric, Metric(metric, bool(higher.get(base, True)), _read_value(metric),
                                       f"lm-eval's per-document {base}"))
    kinds = {i.request_type for i in task.instances}
    version = task.VERSION if task.VERSION is not None else 0
    extra = {"lm_eval_version": lm_eval.__version__, "lm_eval_task": task_name,
             "lm_eval_task_version": version, "lm_eval_output_type": task.OUTPUT_TYPE,
             "lm_eval_filters": filter_keys, "include_path": str(include_path) if include_path else None}
    protocol = LMEvalProtocol(task=task, task_name=task_name, docs=docs, metric_names=metric_names,
                              record_extra=extra)
    protocol.kind = RequestKind.GENERATE if "generate_until" in kinds else RequestKind.LOGLIKELIHOOD
    split = task.config.test_split or task.config.validation_split or "test"
    spec = TaskSpec(
        task=name, version=_int_version(version), description=f"lm-eval task {task_name}",
        format="lm_eval", eval_split=split, splits={split: SplitSources()},
        protocols={"lm_eval": ProtocolSpec()}, default_protocol="lm_eval",
        metrics=list(metric_names) or ["accuracy"],
    )
    return spec, protocol, samples


@EXTERNAL_TASKS.register("lm_eval")
def plan_external(name: str, options: ExternalOptions) -> ExternalTask:
    spec, protocol, samples = plan_lmeval(name, options.include, options.num_fewshot, options.seed, options.limit)
    return ExternalTask(spec, protocol, samples)


def _int_version(version: Any) -> int:
    try:
        return int(float(version))
    except (TypeError, ValueError):
        return 0


def _read_value(metric: str) -> Any:
    def read(score: Score) -> float | None:
        if score.value is None:
            return None
        value = score.metadata.get("values", {}).get(metric)
        return None if value is None else float(value)

    return read
