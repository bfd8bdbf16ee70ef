"""The runner: tasks -> requests -> one batch per request kind -> scores -> metrics -> record.

Planning lives in harness.run.planning, request execution in harness.run.execution, metrics and
record entries in harness.run.aggregate, the run folder's files in harness.run.folder, the
backend stack in harness.backends.stack; the Runner ties them into one run's lifecycle. Samples
are scored in chunks; each chunk's results are appended to samples.jsonl (fsynced) and its
requests committed to the cache before the next chunk starts, so a rerun of an interrupted run
recomputes nothing already scored.

`--protocol sft` has its own flow (trainers.task_sft), which the CLI chooses; it is built from
the same public pieces (RunFolder, the backend stack, planning, execution, open_aux_models).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import __version__
from harness.backends.stack import BackendStack, open_stack, wrap
from harness.errors import HarnessError
from harness.protocols.sft import is_sft
from harness.run.aggregate import group_results, stored_scores, task_result
from harness.run.catalog import Catalog, load_catalog
from harness.run.config import RunConfig
from harness.run.execution import ProgressFactory, check_capabilities, execute_task
from harness.run.folder import RunFolder, SampleLog
from harness.run.planning import TaskPlan, plan_run
from harness.run.records import ModelInfo, RunRecord, environment, git_commit, this_process
from harness.types import ModelBackend, stable_hash

__all__ = ["ProgressFactory", "Runner", "new_record", "open_aux_models"]


def default_request_cache() -> Path:
    """The request cache `harness run` uses by default (the same file as the CLI's)."""
    from harness.backends.models import cache_root

    return cache_root() / "requests.sqlite"


def new_record(folder: RunFolder, config: RunConfig, fingerprint: str, info: dict[str, Any],
               env: dict[str, Any] | None = None) -> RunRecord:
    """A running record for the folder; a resumed run keeps its id and start time, and a folder
    started with other weights is refused."""
    previous = folder.check_model(fingerprint)
    run_id = previous.run_id if previous else uuid.uuid4().hex[:12]
    created = previous.created_at if previous else datetime.now(UTC).isoformat()
    return RunRecord(
        run_id=run_id, status="running", created_at=created, harness_version=__version__,
        git_commit=git_commit(),
        model=ModelInfo(name=config.model or "default", backend=config.backend, fingerprint=fingerprint, args=info),
        config=config.model_dump(mode="json"), environment=env if env is not None else environment(),
        process=this_process(),
    )


def open_aux_models(config: RunConfig, plans: Sequence[TaskPlan], stack: ExitStack, *,
                    given: Mapping[str, ModelBackend] | None = None,
                    base_delay: float = 1.0) -> tuple[dict[str | None, ModelBackend], dict[str, Any]]:
    """The auxiliary models (RunConfig.aux_models) the plans' protocols use, each behind its own
    backend stack (retries, the shared request cache), closed with `stack`; sets each plan's
    `aux` fingerprints. `given` backends (by role) are used instead of creating them."""
    used = {role for p in plans for role in p.protocol.aux_roles(p.ctx)}
    unused = sorted(set(config.aux_models) - used)
    if unused:
        raise HarnessError(f"auxiliary model(s) {', '.join(unused)} configured, but no task of this run uses them")
    backends: dict[str | None, ModelBackend] = {}
    info: dict[str, Any] = {}
    opened: dict[str, BackendStack] = {}  # one stack per distinct model spec (a jury may name one model twice)
    for role in sorted(used):
        spec = config.aux_models.get(role)
        if spec is None:  # e.g. a task's `extractor: model` in a run with no extractor model
            raise HarnessError(f"a task of this run uses the {role!r} model, but the run configures none "
                               f"(--{role.replace('_', '-')}-model)")
        inner = (given or {}).get(role)
        same = stable_hash(spec.model_dump(mode="json"))
        if inner is None and same in opened:
            aux = opened[same]
        elif inner is None:
            aux = opened[same] = stack.enter_context(open_stack(
                spec.backend, spec.model, batch_size=config.batch_size, model_args=spec.model_args,
                max_attempts=config.max_attempts, base_delay=base_delay, cache=config.cache))
        else:
            aux = stack.enter_context(wrap(inner, max_attempts=config.max_attempts, base_delay=base_delay,
                                           cache=config.cache, owned=False))
        backends[role] = aux.top
        info[role] = {"name": spec.model or "default", "backend": spec.backend,
                      "fingerprint": aux.model.fingerprint(), "args": aux.model.info()}
    for p in plans:
        p.aux = {role: info[role]["fingerprint"] for role in p.protocol.aux_roles(p.ctx)}
    return backends, info


class Runner:
    def __init__(
        self, config: RunConfig, *, backend: ModelBackend | None = None,
        catalog: Catalog | None = None, progress: ProgressFactory | None = None,
        chunk_size: int | None = None, retry_base_delay: float = 1.0,
        aux_backends: Mapping[str, ModelBackend] | None = None,
    ):
        if is_sft(config.protocol):
            raise HarnessError("--protocol sft fine-tunes before it scores: run it with trainers.task_sft.run_sft "
                               "(the `harness run` command chooses that flow)")
        if backend is None and "cache" not in config.model_fields_set:
            # the CLI's default: a model the run creates uses the user's request cache unless the
            # config says otherwise (cache=None disables it); a given backend is used as configured
            config = config.model_copy(update={"cache": default_request_cache()})
        self.config = config
        self.catalog = catalog or load_catalog(config.task_dirs)
        self._backend = backend  # given: used as is, and not closed by the run
        self._aux_given = dict(aux_backends or {})  # by role, instead of creating them from config
        self.progress = progress
        self.chunk_size = chunk_size or max(8, config.batch_size * 4)
        self.retry_base_delay = retry_base_delay

    def _model_stack(self) -> BackendStack:
        config = self.config
        if self._backend is not None:
            return wrap(self._backend, max_attempts=config.max_attempts, base_delay=self.retry_base_delay,
                        cache=config.cache, owned=False)
        return open_stack(config.backend, config.model, batch_size=config.batch_size, model_args=config.model_args,
                          max_attempts=config.max_attempts, base_delay=self.retry_base_delay, cache=config.cache)

    def run(self) -> RunRecord:
        config = self.config
        plans = plan_run(config, self.catalog)
        folder = RunFolder(config.output)
        folder.claim(config.identity())
        with ExitStack() as resources:
            if self._backend is not None:
                check_capabilities(self._backend, plans)
            model = resources.enter_context(self._model_stack())
            check_capabilities(model.model, plans)
            aux, aux_info = open_aux_models(config, plans, resources, given=self._aux_given,
                                            base_delay=self.retry_base_delay)
            backends: dict[str | None, ModelBackend] = {None: model.top, **aux}
            record = new_record(folder, config, model.model.fingerprint(), model.model.info())
            folder.write_record(record)
            sample_log = resources.enter_context(folder.sample_log())
            try:
                for plan in plans:
                    started = time.monotonic()
                    execute_task(plan, backends, sample_log, chunk_size=self.chunk_size, progress=self.progress)
                    duration = task_seconds(plan, sample_log, time.monotonic() - started)
                    result = task_result(plan, sample_log, duration, aux_info)
                    extra = plan.protocol.finish_extra(result.extra, config.model)
                    record.tasks[plan.key] = result.model_copy(update={"extra": extra})
                    if model.cached is not None:
                        record.cache = {"path": str(config.cache), **model.cache_stats()}
                    record.requests = model.request_stats()
                    folder.write_record(record)
                finish(record, plans, sample_log)
                folder.write_record(record)
            except BaseException:
                record.status = "failed"
                folder.write_record(record)
                raise
        return record


def task_seconds(plan: TaskPlan, sample_log: SampleLog, session: float) -> float:
    """The task's duration over all its sessions: the scoring time its samples.jsonl entries carry
    (a resumed task adds this session's to the earlier ones'); this session's time for a log
    written before entries carried it."""
    entries = sample_log.for_task(plan.key)
    if not entries or any("elapsed_s" not in e for e in entries):
        return session
    return max(float(sum(e["elapsed_s"] for e in entries)), 0.0)


def finish(record: RunRecord, plans: Sequence[TaskPlan], sample_log: SampleLog) -> None:
    record.groups = group_results(record.tasks, {p.key: stored_scores(p, sample_log) for p in plans})
    record.status = "finished"
    record.process = {}
    record.finished_at = datetime.now(UTC).isoformat()
