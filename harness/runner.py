"""The runner: tasks -> requests -> one batch per request kind -> scores -> metrics -> record.

Samples are scored in chunks; each chunk's results are appended to samples.jsonl (fsynced)
and its requests committed to the cache before the next chunk starts, so a rerun of an
interrupted run recomputes nothing already scored.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import __version__
from harness.backends import CachingBackend, create_backend
from harness.backends.retry import RetryingBackend
from harness.catalog import Catalog, load_catalog
from harness.config import RunConfig
from harness.data.sources import SourceKind, load_split
from harness.errors import CapabilityError, HarnessError
from harness.formats import FORMATS
from harness.metrics import METRICS, Metric, mean_with_ci
from harness.protocols import PROTOCOLS, PromptContext, Protocol
from harness.records import ModelInfo, RunRecord, SampleLog, TaskResult, environment, git_commit
from harness.sft.protocol import is_sft
from harness.taskspec import TaskSpec
from harness.types import (
    GenerationRequest,
    LoglikelihoodRequest,
    ModelBackend,
    Request,
    RequestFailure,
    RequestKind,
    RoutedRequest,
    Sample,
    Score,
    stable_hash,
)

log = logging.getLogger(__name__)

ProgressFactory = Callable[[str, int, int], Any]


@dataclass
class TaskPlan:
    """One task of a run. `samples` is this shard's share; `index` maps each sample id to its
    position in the whole task, so shards merge back in order."""

    key: str
    spec: TaskSpec
    protocol: Protocol
    ctx: PromptContext
    samples: list[Sample]
    requests: dict[str, list[Request]]
    source: str
    data_fingerprint: str
    prompt_hash: str
    index: dict[str, int]
    # role -> fingerprint of the auxiliary models (patient, judge) this task's protocol uses
    aux: dict[str, str] = field(default_factory=dict)

    def fingerprint(self, scorer: str) -> str:
        parts = {
            "task": self.spec.task, "version": self.spec.version, "protocol": self.protocol.label(self.ctx),
            "n_shot": self.ctx.n_shot, "data": self.data_fingerprint, "prompts": self.prompt_hash,
            "scorer": scorer,
        }
        # only when present, so the fingerprints of other tasks stay put
        if self.aux:
            parts["aux_models"] = self.aux
        info = self.protocol.record_info(self.ctx)
        if info:
            parts["protocol_info"] = info
        return stable_hash(parts)


def resolve_tasks(config: RunConfig, catalog: Catalog) -> tuple[list[tuple[str, str | None]], SourceKind]:
    """(task, protocol) pairs to run; protocol None means --protocol or the task's default."""
    entries: list[tuple[str, str | None]] = []
    source = config.data_source
    if config.suite:
        suite = catalog.suite(config.suite)
        entries.extend(suite.entries())
        if source == "auto" and suite.source != "auto":
            source = suite.source
    entries.extend((t, None) for t in config.tasks if (t, None) not in entries)
    if not entries:
        raise HarnessError("nothing to run: pass --suite or --tasks")
    for name, _ in entries:
        if not name.startswith("lm_eval:"):
            catalog.task(name)
    if source == "auto":
        source = "local" if config.data_dir is not None else "hub"
    return entries, source


def plan_task(spec: TaskSpec, config: RunConfig, source: SourceKind, protocol_name: str | None = None) -> TaskPlan:
    protocol_name, options = spec.protocol(config.protocol or protocol_name)
    protocol = PROTOCOLS.get(protocol_name)
    samples = load_split(spec, spec.eval_split, source, config.data_dir)
    if config.limit is not None:
        samples = samples[: config.limit]
    pool: tuple[Sample, ...] = ()
    fewshot = spec.fewshot
    if config.num_fewshot > 0:
        if fewshot is None:
            raise HarnessError(f"task {spec.task!r} defines no few-shot split")
        pool = tuple(load_split(spec, fewshot.split, source, config.data_dir))
        fewshot = fewshot.model_copy(update={"seed": config.seed})
    ctx = PromptContext(FORMATS.get(spec.format), options, config.num_fewshot, pool, fewshot,
                        language=spec.language, seed=config.seed, aux_roles=frozenset(config.aux_models))
    return _finish_plan(spec, protocol, ctx, samples, config, source)


def plan_lmeval_task(name: str, config: RunConfig) -> TaskPlan:
    """A task of lm-eval's, built by lm-eval's own task machinery (harness.lmeval_bridge)."""
    from harness.formats import PromptFormat
    from harness.lmeval_bridge import plan_lmeval
    from harness.taskspec import ProtocolSpec

    spec, protocol, samples = plan_lmeval(name, config.lmeval_include, config.num_fewshot, config.seed,
                                          config.limit)
    ctx = PromptContext(PromptFormat("lm_eval"), ProtocolSpec(), config.num_fewshot, seed=config.seed)
    return _finish_plan(spec, protocol, ctx, samples, config, "lm_eval")


def _finish_plan(spec: TaskSpec, protocol: Protocol, ctx: PromptContext, samples: list[Sample],
                 config: RunConfig, source: str) -> TaskPlan:
    requests: dict[str, list[Request]] = {}
    for s in samples:
        try:
            requests[s.id] = protocol.requests(s, ctx)
        except (KeyError, TypeError, ValueError) as exc:
            raise HarnessError(f"task {spec.task!r}, sample {s.id}: cannot build prompt: {exc}") from None
    key = f"{spec.task}|{protocol.label(ctx)}|{config.num_fewshot}shot"
    index = {s.id: i for i, s in enumerate(samples)}
    data_fp = stable_hash([s.to_json() for s in samples])
    prompt_hash = stable_hash([[r.key() for r in requests[s.id]] for s in samples])
    if config.shard is not None:
        shard, n_shards = config.shard
        samples = samples[shard::n_shards]
    return TaskPlan(
        key=key, spec=spec, protocol=protocol, ctx=ctx, samples=samples, requests=requests,
        source=source, data_fingerprint=data_fp, prompt_hash=prompt_hash, index=index,
    )


def _score_to_json(score: Score) -> dict[str, Any]:
    return {"value": score.value, "answer": score.answer, "explanation": score.explanation,
            "metadata": dict(score.metadata)}


def _score_from_json(data: dict[str, Any]) -> Score:
    return Score(data["value"], data.get("answer"), data.get("explanation"), data.get("metadata") or {})


def _request_size(request: Request) -> int:
    if isinstance(request, RoutedRequest):
        request = request.request
    if isinstance(request, LoglikelihoodRequest):
        return len(request.context) + len(request.continuation)
    return len(request.prompt or "") + sum(len(m.content) for m in request.messages or ())


def _usage(backend: ModelBackend) -> dict[str, int]:
    usage = getattr(backend, "usage", None)
    return dict(usage()) if callable(usage) else {}


def _score(plan: TaskPlan, sample: Sample, results: Sequence[Any]) -> Score:
    """A sample with a failed request is unscored with the reason; never guessed."""
    failures = [r for r in results if isinstance(r, RequestFailure)]
    if failures:
        return Score(None, explanation=f"request failed: {failures[0].reason}",
                     metadata={"request_failed": True, "failures": [f.reason for f in failures]})
    return plan.protocol.score(sample, results, plan.ctx)


def _call(backend: ModelBackend, requests: Sequence[Request]) -> list[Any]:
    """One call per request kind; results back in request order."""
    results: list[Any] = [None] * len(requests)
    for kind in RequestKind:
        idx = [i for i, r in enumerate(requests) if r.kind == kind]
        if not idx:
            continue
        if kind == RequestKind.LOGLIKELIHOOD:
            ll = [r for r in (requests[i] for i in idx) if isinstance(r, LoglikelihoodRequest)]
            out: list[Any] = backend.loglikelihood(ll)
        else:
            gen = [r for r in (requests[i] for i in idx) if isinstance(r, GenerationRequest)]
            out = backend.generate(gen)
        for i, res in zip(idx, out, strict=True):
            results[i] = res
    return results


def _dispatch(backends: Mapping[str | None, ModelBackend], requests: Sequence[Request]) -> list[Any]:
    """Like _call, but RoutedRequests go to the auxiliary backend of their role (key None is the
    model under test); results back in request order."""
    by_role: dict[str | None, list[int]] = {}
    for i, r in enumerate(requests):
        by_role.setdefault(r.role if isinstance(r, RoutedRequest) else None, []).append(i)
    results: list[Any] = [None] * len(requests)
    for role, idx in by_role.items():
        if role not in backends:
            raise HarnessError(f"a protocol asked for the {role!r} model, but the run configures none")
        batch = [r.request if isinstance(r, RoutedRequest) else r for r in (requests[i] for i in idx)]
        for i, res in zip(idx, _call(backends[role], batch), strict=True):
            results[i] = res
    return results


class Runner:
    def __init__(
        self, config: RunConfig, *, backend: ModelBackend | None = None,
        catalog: Catalog | None = None, progress: ProgressFactory | None = None,
        chunk_size: int | None = None, retry_base_delay: float = 1.0,
        aux_backends: Mapping[str, ModelBackend] | None = None,
    ):
        self.config = config
        self.catalog = catalog or load_catalog(config.task_dirs)
        self._backend = backend
        self._aux_given = dict(aux_backends or {})  # by role, instead of creating them from config
        self._aux_open: list[Any] = []
        self.progress = progress
        self.chunk_size = chunk_size or max(8, config.batch_size * 4)
        self.retry_base_delay = retry_base_delay

    def _check_resume(self, out: Path) -> None:
        cfg_path = out / "config.json"
        identity = self.config.identity()
        if cfg_path.exists():
            previous = json.loads(cfg_path.read_text(encoding="utf-8"))
            diff = sorted(k for k in {*previous, *identity} if previous.get(k) != identity.get(k))
            if diff:
                raise HarnessError(
                    f"{out} holds a run with different settings ({', '.join(diff)}); "
                    "use another --output or delete that folder"
                )
        else:
            cfg_path.write_text(json.dumps(identity, indent=2, sort_keys=True), encoding="utf-8")

    def run(self) -> RunRecord:
        config = self.config
        if is_sft(config.protocol):  # fine-tune per task first: its own flow (harness.sft.runner)
            from harness.sft.runner import run_sft

            return run_sft(self)
        entries, source = resolve_tasks(config, self.catalog)
        plans = [
            plan_lmeval_task(n, config) if n.startswith("lm_eval:")
            else plan_task(self.catalog.task(n), config, source, p)
            for n, p in entries
        ]
        keys = [p.key for p in plans]
        if len(set(keys)) < len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise HarnessError(f"task {dup} is listed twice")
        out = config.output
        out.mkdir(parents=True, exist_ok=True)
        self._check_resume(out)

        backend = self._backend or create_backend(
            config.backend, config.model, batch_size=config.batch_size, **config.model_args
        )
        for plan in plans:
            if plan.protocol.kind not in backend.capabilities:
                self._close(backend)
                raise CapabilityError(
                    f"backend {backend.name!r} cannot serve {plan.protocol.kind.value} requests "
                    f"needed by task {plan.spec.task!r} (protocol {plan.protocol.name})"
                )
        retrying = RetryingBackend(backend, max_attempts=config.max_attempts,
                                   base_delay=self.retry_base_delay)
        cached: CachingBackend | None = None
        if config.cache is not None:
            cached = CachingBackend(retrying, config.cache)
        runner_backend: ModelBackend = cached or retrying
        try:
            aux, aux_info = self._aux_backends(plans)
        except BaseException:
            if cached is not None:
                cached.close()
            self._close(backend)
            raise
        backends: dict[str | None, ModelBackend] = {None: runner_backend, **aux}

        record = self._new_record(out, backend)
        record.write(out)
        sample_log = SampleLog(out / "samples.jsonl")
        try:
            for plan in plans:
                started = time.monotonic()
                self._run_task(plan, backends, sample_log)
                record.tasks[plan.key] = self._task_result(plan, sample_log,
                                                          time.monotonic() - started, aux_info)
                if cached is not None:
                    record.cache = {"path": str(config.cache), **cached.stats()}
                record.requests = {**retrying.stats(), **_usage(backend)}
                record.write(out)
            record.groups = group_results(
                record.tasks, {p.key: self._scores(p, sample_log) for p in plans}
            )
            record.status = "finished"
            record.finished_at = datetime.now(UTC).isoformat()
            record.write(out)
        except BaseException:
            record.status = "failed"
            record.write(out)
            raise
        finally:
            sample_log.close()
            if cached is not None:
                cached.close()
            self._close(backend)
            self._close_aux()
        return record

    def _aux_backends(self, plans: Sequence[TaskPlan]) -> tuple[dict[str | None, ModelBackend], dict[str, Any]]:
        """The auxiliary models (RunConfig.aux_models) the plans' protocols use, each behind its
        own retry wrapper and the shared request cache; sets each plan's `aux` fingerprints.
        What must be closed at the end goes to self._aux_open."""
        used = {role for p in plans for role in p.protocol.aux_roles(p.ctx)}
        unused = sorted(set(self.config.aux_models) - used)
        if unused:
            raise HarnessError(f"auxiliary model(s) {', '.join(unused)} configured, but no task of this run uses them")
        backends: dict[str | None, ModelBackend] = {}
        info: dict[str, Any] = {}
        try:
            for role in sorted(used):
                spec = self.config.aux_models[role]
                inner = self._aux_given.get(role)
                if inner is None:
                    inner = create_backend(spec.backend, spec.model, batch_size=self.config.batch_size,
                                           **spec.model_args)
                    self._aux_open.append(inner)  # we made it, we close it
                wrapped: ModelBackend = RetryingBackend(inner, max_attempts=self.config.max_attempts,
                                                        base_delay=self.retry_base_delay)
                if self.config.cache is not None:
                    wrapped = CachingBackend(wrapped, self.config.cache)
                    self._aux_open.append(wrapped)
                backends[role] = wrapped
                info[role] = {"name": spec.model or "default", "backend": spec.backend,
                              "fingerprint": inner.fingerprint(), "args": inner.info()}
        except BaseException:
            self._close_aux()
            raise
        for p in plans:
            p.aux = {role: info[role]["fingerprint"] for role in p.protocol.aux_roles(p.ctx)}
        return backends, info

    def _close_aux(self) -> None:
        while self._aux_open:
            close = getattr(self._aux_open.pop(), "close", None)
            if callable(close):
                close()

    def _close(self, backend: ModelBackend) -> None:
        close = getattr(backend, "close", None)
        if self._backend is None and callable(close):  # we made it, we close it
            close()

    def _new_record(self, out: Path, backend: ModelBackend) -> RunRecord:
        previous = out / "run.json"
        run_id = uuid.uuid4().hex[:12]
        created = datetime.now(UTC).isoformat()
        if previous.exists():
            try:
                old = json.loads(previous.read_text(encoding="utf-8"))
                run_id, created = old["run_id"], old["created_at"]
                old_fp = old["model"]["fingerprint"]
            except (json.JSONDecodeError, KeyError, TypeError):
                old_fp = None
            if old_fp is not None and old_fp != backend.fingerprint():
                raise HarnessError(
                    f"{out} was started with other model weights (fingerprint {old_fp[:12]}, "
                    f"now {backend.fingerprint()[:12]}); use another --output"
                )
        info = backend.info()
        return RunRecord(
            run_id=run_id, status="running", created_at=created, harness_version=__version__,
            git_commit=git_commit(),
            model=ModelInfo(name=self.config.model or "default", backend=self.config.backend,
                            fingerprint=backend.fingerprint(), args=info),
            config=self.config.model_dump(mode="json"), environment=environment(),
        )

    def _run_task(self, plan: TaskPlan, backends: Mapping[str | None, ModelBackend],
                  sample_log: SampleLog) -> None:
        done = sample_log.done(plan.key)
        # Longest prompts first: chunks (and so backend batches) hold prompts of similar
        # length, which keeps padding small; results are keyed by id, so order is free.
        todo = sorted((s for s in plan.samples if s.id not in done),
                      key=lambda s: -sum(_request_size(r) for r in plan.requests[s.id]))
        bar = self.progress(plan.key, len(plan.samples), len(plan.samples) - len(todo)) \
            if self.progress else None
        try:
            for start in range(0, len(todo), self.chunk_size):
                chunk = todo[start:start + self.chunk_size]
                flat: list[Request] = []
                spans = []
                for s in chunk:
                    reqs = plan.requests[s.id]
                    spans.append((len(flat), len(flat) + len(reqs)))
                    flat.extend(reqs)
                results = _dispatch(backends, flat)
                per_sample = [list(results[a:b]) for a, b in spans]
                self._followups(plan, chunk, per_sample, backends)
                entries = []
                for s, sample_results in zip(chunk, per_sample, strict=True):
                    score = _score(plan, s, sample_results)
                    entries.append({
                        "task_key": plan.key, "sample_id": s.id, "index": plan.index[s.id],
                        "target": s.target,
                        "prompt": plan.requests[s.id][0].key().get("context")
                        or plan.requests[s.id][0].key().get("messages"),
                        "score": _score_to_json(score),
                    })
                sample_log.append(entries)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()

    def _followups(self, plan: TaskPlan, chunk: Sequence[Sample], per_sample: list[list[Any]],
                   backends: Mapping[str | None, ModelBackend]) -> None:
        """Run later stages of multi-stage protocols, batched across the chunk, until every
        sample is done. A failed request ends that sample's stages (it is unscored)."""
        while True:
            pending: list[tuple[int, list[Request]]] = []
            for i, (s, res) in enumerate(zip(chunk, per_sample, strict=True)):
                if any(isinstance(r, RequestFailure) for r in res):
                    continue
                nxt = plan.protocol.followup(s, res, plan.ctx)
                if nxt:
                    pending.append((i, nxt))
            if not pending:
                return
            flat = [r for _, reqs in pending for r in reqs]
            results = _dispatch(backends, flat)
            pos = 0
            for i, reqs in pending:
                per_sample[i].extend(results[pos:pos + len(reqs)])
                pos += len(reqs)

    def _scores(self, plan: TaskPlan, sample_log: SampleLog) -> list[Score]:
        entries = {e["sample_id"]: e for e in sample_log.for_task(plan.key)}
        missing = [s.id for s in plan.samples if s.id not in entries]
        if missing:
            raise HarnessError(f"task {plan.key}: {len(missing)} samples were not scored")
        return [_score_from_json(entries[s.id]["score"]) for s in plan.samples]

    def _task_result(self, plan: TaskPlan, sample_log: SampleLog, duration: float,
                     aux_info: Mapping[str, Any] | None = None) -> TaskResult:
        names = list(dict.fromkeys([*plan.spec.metrics, *plan.protocol.metrics]))
        scorer = f"{plan.protocol.label(plan.ctx)}:{','.join(names)}"
        spec = plan.spec
        result = TaskResult(
            task=spec.task, task_version=spec.version, group=spec.group,
            protocol=plan.protocol.label(plan.ctx), n_shot=plan.ctx.n_shot,
            fewshot_seed=plan.ctx.fewshot.seed if plan.ctx.n_shot and plan.ctx.fewshot else None,
            split=spec.eval_split, language=spec.language, data_source=plan.source,
            data_fingerprint=plan.data_fingerprint, prompt_hash=plan.prompt_hash, scorer=scorer,
            task_fingerprint=plan.fingerprint(scorer), n_samples=0,
            metrics={n: {} for n in names}, main_metric=spec.metrics[0], duration_s=round(duration, 3),
            extra=dict(getattr(plan.protocol, "record_extra", {})),
        )
        result.extra.update(plan.protocol.record_info(plan.ctx))
        if plan.aux:
            result.extra["aux_models"] = {role: (aux_info or {})[role] for role in plan.aux}
        return summarize(result, self._scores(plan, sample_log))


def summarize(result: TaskResult, scores: Sequence[Score]) -> TaskResult:
    """Fill a task's metrics from its scores, in task order (shared by run and merge)."""
    options = {"language": result.language}
    metrics = {n: METRICS.get(n).aggregate(scores, options).to_json() for n in result.metrics}
    return result.model_copy(update={"metrics": metrics, "n_samples": len(scores)})


def group_results(
    results: Mapping[str, TaskResult], scores: Mapping[str, Sequence[Score]]
) -> dict[str, dict[str, Any]]:
    """Micro average of the main metric over the tasks of each group."""
    groups: dict[str, list[str]] = {}
    by_key = results
    for key, res in by_key.items():
        if res.group:
            groups.setdefault(res.group, []).append(key)
    out: dict[str, dict[str, Any]] = {}
    for name, keys in groups.items():
        metric = METRICS.get(by_key[keys[0]].main_metric)
        if not isinstance(metric, Metric):  # corpus metrics have no per-sample micro average
            continue
        values = [metric.read(s) for k in keys for s in scores[k]]
        out[name] = {"tasks": keys, "metrics": {metric.name: mean_with_ci(metric.name, values).to_json()}}
    return out
