"""The runner: tasks -> requests -> one batch per request kind -> scores -> metrics -> record.

Planning lives in harness.planning, request execution in harness.execution, metrics and record
entries in harness.aggregate; the Runner ties them to one run folder. Samples are scored in
chunks; each chunk's results are appended to samples.jsonl (fsynced) and its requests committed
to the cache before the next chunk starts, so a rerun of an interrupted run recomputes nothing
already scored.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import __version__
from harness.aggregate import group_results, stored_scores, summarize, task_result
from harness.backends import CachingBackend, create_backend
from harness.backends.retry import RetryingBackend
from harness.catalog import Catalog, load_catalog
from harness.config import RunConfig
from harness.errors import CapabilityError, HarnessError
from harness.execution import (
    ProgressFactory,
    backend_usage,
    check_capabilities,
    execute_task,
    wrap_backend,
)
from harness.planning import TaskPlan, plan_lmeval_task, plan_task, resolve_tasks
from harness.records import ModelInfo, RunRecord, SampleLog, environment, git_commit
from harness.sft.protocol import is_sft
from harness.types import ModelBackend

__all__ = ["ProgressFactory", "Runner", "TaskPlan", "group_results", "plan_lmeval_task", "plan_task",
           "resolve_tasks", "summarize"]

log = logging.getLogger(__name__)


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

    def wrap(self, backend: ModelBackend) -> tuple[RetryingBackend, CachingBackend | None]:
        return wrap_backend(backend, max_attempts=self.config.max_attempts, base_delay=self.retry_base_delay,
                            cache=self.config.cache)

    def execute(self, plan: TaskPlan, backends: Mapping[str | None, ModelBackend], sample_log: SampleLog) -> None:
        execute_task(plan, backends, sample_log, chunk_size=self.chunk_size, progress=self.progress)

    def check_resume(self, out: Path) -> None:
        """Refuse an output folder holding a run with other settings; else record ours."""
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
        self.check_resume(out)

        backend = self._backend or create_backend(
            config.backend, config.model, batch_size=config.batch_size, **config.model_args
        )
        try:
            check_capabilities(backend, plans)
        except CapabilityError:
            self._close(backend)
            raise
        retrying, cached = self.wrap(backend)
        runner_backend: ModelBackend = cached or retrying
        try:
            aux, aux_info = self.aux_backends(plans)
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
                self.execute(plan, backends, sample_log)
                record.tasks[plan.key] = task_result(plan, sample_log, time.monotonic() - started, aux_info)
                if cached is not None:
                    record.cache = {"path": str(config.cache), **cached.stats()}
                record.requests = {**retrying.stats(), **backend_usage(backend)}
                record.write(out)
            record.groups = group_results(record.tasks, {p.key: stored_scores(p, sample_log) for p in plans})
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

    def aux_backends(self, plans: Sequence[TaskPlan]) -> tuple[dict[str | None, ModelBackend], dict[str, Any]]:
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
                retrying, cached = self.wrap(inner)
                if cached is not None:
                    self._aux_open.append(cached)
                backends[role] = cached or retrying
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
