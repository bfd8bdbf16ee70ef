"""Task and suite discovery: every YAML under tasks/ (and any extra folders), validated, with
each name it refers to (format, protocol, metric, record adapter) checked up front."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.data.adapters import ADAPTERS
from harness.data.sources import tasks_dir
from harness.data.spec import TaskSpec, load_task_file
from harness.errors import ConfigError, HarnessError
from harness.protocols.base import PROTOCOLS
from harness.protocols.extract import EXTRACTORS
from harness.protocols.formats import FORMATS
from harness.registry import Registry
from harness.schema import config_error, read_yaml
from harness.scoring.metrics import METRICS


class SuiteEntry(BaseModel):
    """A task run with a protocol other than its default (e.g. medqa with cot)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str
    protocol: str


class SuiteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str
    description: str = ""
    source: Literal["bundled", "local", "hub", "auto"] = Field(
        default="auto", description="Where the data comes from; auto = local with --data-dir, else hub."
    )
    tasks: list[str | SuiteEntry] = Field(
        min_length=1, description="Task ids, or {task, protocol} to run a task with another protocol."
    )

    def entries(self) -> list[tuple[str, str | None]]:
        return [(t, None) if isinstance(t, str) else (t.task, t.protocol) for t in self.tasks]


@dataclass
class Catalog:
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    suites: dict[str, SuiteSpec] = field(default_factory=dict)

    def task(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            raise HarnessError(_unknown("task", name, self.tasks))
        return self.tasks[name]

    def suite(self, name: str) -> SuiteSpec:
        if name not in self.suites:
            raise HarnessError(_unknown("suite", name, self.suites))
        return self.suites[name]


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    reg: Registry[object] = Registry(kind)
    for k in known:
        reg.add(k, object())
    return reg.unknown_message(name)


def _check_names(spec: TaskSpec) -> None:
    def check(registry: Registry[object] | Registry[object], name: str, key: str) -> None:
        if name not in registry:
            raise ConfigError(registry.unknown_message(name), file=spec.source_file, key=key)

    check(FORMATS, spec.format, "format")  # type: ignore[arg-type]
    for p in spec.protocols:
        check(PROTOCOLS, p, f"protocols.{p}")  # type: ignore[arg-type]
    for p, options in spec.protocols.items():
        if options.extractor is not None:
            check(EXTRACTORS, options.extractor, f"protocols.{p}.extractor")  # type: ignore[arg-type]
    for m in spec.metrics:
        check(METRICS, m, "metrics")  # type: ignore[arg-type]
    for split, sources in spec.splits.items():
        for kind in ("local", "hub", "url"):
            src = getattr(sources, kind)
            if src is not None:
                check(ADAPTERS, src.record, f"splits.{split}.{kind}.record")  # type: ignore[arg-type]


def load_catalog(extra_dirs: Iterable[Path] = ()) -> Catalog:
    cat = Catalog()
    roots = [tasks_dir(), *extra_dirs]
    for root in roots:
        if not root.is_dir():
            raise HarnessError(f"task folder not found: {root}")
        for path in sorted(root.glob("*.yaml")):
            for spec in load_task_file(path):
                _check_names(spec)
                if spec.task in cat.tasks:
                    raise ConfigError(
                        f"task {spec.task!r} is also defined in {cat.tasks[spec.task].source_file}",
                        file=str(path),
                    )
                cat.tasks[spec.task] = spec
        for path in sorted((root / "suites").glob("*.yaml")):
            try:
                suite = SuiteSpec.model_validate(read_yaml(path))
            except ValidationError as err:
                raise config_error(err, file=str(path)) from None
            cat.suites[suite.suite] = suite
    for suite in cat.suites.values():
        for name, protocol in suite.entries():
            if name not in cat.tasks:
                raise ConfigError(_unknown("task", name, cat.tasks), file=f"suite {suite.suite}")
            if protocol is not None:
                try:
                    cat.tasks[name].protocol(protocol)
                except ConfigError as exc:
                    raise ConfigError(str(exc), file=f"suite {suite.suite}") from None
    return cat
