"""Planning a run: which (task, protocol) pairs, and each task's samples and requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.data.sources import SourceKind, load_split, read_split
from harness.data.spec import ProtocolSpec, TaskSpec
from harness.errors import HarnessError
from harness.protocols.base import EXTERNAL_TASKS, PROTOCOLS, ExternalOptions, PromptContext, Protocol
from harness.protocols.extract import EXTRACTORS
from harness.protocols.formats import FORMATS, PromptFormat
from harness.run.catalog import Catalog
from harness.run.config import RunConfig
from harness.types import Request, Sample, TaskKey, stable_hash


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
    # facts about the data (exact duplicate records) for the task's record extra
    data_extra: dict[str, Any] = field(default_factory=dict)
    # --truncate: how prompts longer than the model's context are cut (None: left unscored)
    truncate: str | None = None

    def fingerprint(self, scorer: str) -> str:
        parts = {
            "task": self.spec.task, "version": self.spec.version, "protocol": self.protocol.label(self.ctx),
            "n_shot": self.ctx.n_shot, "data": self.data_fingerprint, "prompts": self.prompt_hash,
            "scorer": scorer,
        }
        # only when present, so the fingerprints of other tasks stay put
        if self.aux:
            parts["aux_models"] = self.aux
        if self.truncate:
            parts["truncate"] = self.truncate
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
        if external_provider(name) is None:
            catalog.task(name)
    if source == "auto":
        source = "local" if config.data_dir is not None else "hub"
    return entries, source


def plan_task(spec: TaskSpec, config: RunConfig, source: SourceKind, protocol_name: str | None = None) -> TaskPlan:
    protocol_name, options = spec.protocol(config.protocol or protocol_name)
    protocol = PROTOCOLS.get(protocol_name)
    if config.extractor is not None:  # --extractor: instead of the task's own `extractor:`
        EXTRACTORS.get(config.extractor)  # an unknown name: one line with "did you mean"
        options = options.model_copy(update={"extractor": config.extractor})
    unpinned = True if config.allow_unpinned else None  # None: $MEDLLM_HARNESS_ALLOW_UNPINNED decides
    data = read_split(spec, spec.eval_split, source, config.data_dir, dedup=config.dedup, allow_unpinned=unpinned)
    samples = data.samples
    if config.limit is not None:
        samples = samples[: config.limit]
    pool: tuple[Sample, ...] = ()
    fewshot = spec.fewshot
    if config.num_fewshot > 0:
        if fewshot is None:
            raise HarnessError(f"task {spec.task!r} defines no few-shot split")
        pool = tuple(load_split(spec, fewshot.split, source, config.data_dir, allow_unpinned=unpinned))
        fewshot = fewshot.model_copy(update={"seed": config.seed})
    settings = {"rubric": config.rubric.model_dump(mode="json")} if config.rubric is not None else {}
    ctx = PromptContext(FORMATS.get(spec.format), options, config.num_fewshot, pool, fewshot,
                        language=spec.language, seed=config.seed, aux_roles=frozenset(config.aux_models),
                        family_settings=settings)
    plan = _finish_plan(spec, protocol, ctx, samples, config, source)
    plan.data_extra = data.record_extra()
    if config.limit is not None:  # a subset: its own data fingerprint, and said in the record
        plan.data_extra["selection"] = {"limit": config.limit, "of": len(data.samples)}
    return plan


def external_provider(name: str) -> str | None:
    """`PREFIX:NAME` names a task of another harness (e.g. `lm_eval:medqa_4options`), planned by the
    provider registered under PREFIX in EXTERNAL_TASKS; None for our own tasks."""
    prefix, sep, _ = name.partition(":")
    if not sep:
        return None
    if prefix not in EXTERNAL_TASKS:
        raise HarnessError(EXTERNAL_TASKS.unknown_message(prefix) + f" (in task {name!r})")
    return prefix


def plan_external_task(name: str, config: RunConfig) -> TaskPlan:
    """A task of another harness, built by that harness's own task machinery."""
    prefix = external_provider(name)
    assert prefix is not None
    planned = EXTERNAL_TASKS.get(prefix)(name, ExternalOptions(
        include=config.lmeval_include, num_fewshot=config.num_fewshot, seed=config.seed, limit=config.limit))
    ctx = PromptContext(PromptFormat(prefix), ProtocolSpec(), config.num_fewshot, seed=config.seed)
    return _finish_plan(planned.spec, planned.protocol, ctx, planned.samples, config, prefix)


def plan_run(config: RunConfig, catalog: Catalog) -> list[TaskPlan]:
    """Every task of the run, planned; a task listed twice is refused."""
    entries, source = resolve_tasks(config, catalog)
    plans = [
        plan_external_task(n, config) if external_provider(n) is not None
        else plan_task(catalog.task(n), config, source, p)
        for n, p in entries
    ]
    keys = [p.key for p in plans]
    if len(set(keys)) < len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise HarnessError(f"task {dup} is listed twice")
    return plans


def _finish_plan(spec: TaskSpec, protocol: Protocol, ctx: PromptContext, samples: list[Sample],
                 config: RunConfig, source: str) -> TaskPlan:
    requests: dict[str, list[Request]] = {}
    for s in samples:
        try:
            requests[s.id] = protocol.requests(s, ctx)
        except (KeyError, TypeError, ValueError) as exc:
            raise HarnessError(f"task {spec.task!r}, sample {s.id}: cannot build prompt: {exc}") from None
    key = str(TaskKey(spec.task, protocol.label(ctx), config.num_fewshot))
    index = {s.id: i for i, s in enumerate(samples)}
    data_fp = stable_hash([s.to_json() for s in samples])
    prompt_hash = stable_hash([[r.key() for r in requests[s.id]] for s in samples])
    if config.shard is not None:
        shard, n_shards = config.shard
        samples = samples[shard::n_shards]
    return TaskPlan(
        key=key, spec=spec, protocol=protocol, ctx=ctx, samples=samples, requests=requests,
        source=source, data_fingerprint=data_fp, prompt_hash=prompt_hash, index=index,
        truncate=config.truncate,
    )
