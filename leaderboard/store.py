"""Results store: finished runs, their task results and metrics, and generic results (judge
dimensions, Bradley–Terry ratings, ...) in SQLite (the default) or any SQLAlchemy database.

Records are immutable and keyed by fingerprints: a run by its run id and model fingerprint, a
task result by that plus the task key and task fingerprint. Importing the same run twice is a
no-op; a different record under a stored key is refused. Per-sample outcomes stay in the run
folder; the store keeps its path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    select,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from harness.errors import HarnessError
from harness.records import RunRecord, read_record
from harness.types import stable_hash
from leaderboard.samples import run_dir

log = logging.getLogger(__name__)

STORE_SCHEMA_VERSION = 1
SQLITE_BUSY_TIMEOUT_MS = 60_000

metadata = MetaData()

store_info = Table(
    "store_info", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
runs_table = Table(
    "runs", metadata,
    Column("run_key", String(64), primary_key=True),
    Column("run_id", String(64), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("model_name", Text, nullable=False),
    Column("model_backend", String(64), nullable=False),
    Column("model_fingerprint", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("finished_at", String(40)),
    Column("harness_version", String(40), nullable=False),
    Column("git_commit", String(80)),
    Column("run_path", Text),
    Column("record", Text, nullable=False),
    Column("imported_at", String(40), nullable=False),
)
task_results_table = Table(
    "task_results", metadata,
    Column("result_key", String(64), primary_key=True),
    Column("run_key", String(64), ForeignKey("runs.run_key"), nullable=False, index=True),
    Column("task_key", Text, nullable=False),
    Column("task", Text, nullable=False),
    Column("task_version", Integer, nullable=False),
    Column("protocol", String(64), nullable=False),
    Column("n_shot", Integer, nullable=False),
    Column("task_fingerprint", String(64), nullable=False, index=True),
    Column("main_metric", String(128), nullable=False),
    Column("data_source", String(64), nullable=False),
    Column("split", String(64), nullable=False),
    Column("language", String(16), nullable=False),
    Column("n_samples", Integer, nullable=False),
)
metrics_table = Table(
    "metrics", metadata,
    Column("result_key", String(64), ForeignKey("task_results.result_key"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("value", Float),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("n_scored", Integer, nullable=False),
    Column("n_unscored", Integer, nullable=False),
    Column("ci_method", String(64), nullable=False),
    Column("details", Text),
)
# One shape for everything that is not a task metric of a run: judge dimensions (kind
# "judge_pointwise", name = dimension), pairwise ratings ("bradley_terry"), later kinds too.
results_table = Table(
    "results", metadata,
    Column("result_key", String(64), primary_key=True),
    Column("kind", String(64), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("model_name", Text, nullable=False),
    Column("model_fingerprint", Text, nullable=False, index=True),
    Column("fingerprint", String(64), nullable=False),
    Column("value", Float),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("n", Integer, nullable=False),
    Column("n_unscored", Integer, nullable=False),
    Column("source", Text),
    Column("details", Text),
    Column("created_at", String(40), nullable=False),
)


class GenericResult(BaseModel):
    """A result that is not a task metric of a run, e.g. one judge dimension for one model.
    `fingerprint` decides comparability (judge model + prompt + parser + judged outputs):
    results whose fingerprints differ are shown apart, never averaged together."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(description='What produced it, e.g. "judge_pointwise" or "bradley_terry".')
    name: str = Field(description="The dimension or rating name, e.g. \"safe\" or \"rating\".")
    model_name: str
    model_fingerprint: str
    fingerprint: str = Field(description="Comparability key of the producing protocol.")
    value: float | None
    ci: tuple[float | None, float | None] = (None, None)
    n: int = 0
    n_unscored: int = 0
    source: str | None = Field(default=None, description="Where it came from (a file or run folder).")
    details: dict[str, Any] = Field(default_factory=dict, description='e.g. {"scale": [1, 5]}.')
    created_at: str = ""

    @property
    def key(self) -> str:
        return stable_hash([self.kind, self.name, self.model_fingerprint, self.fingerprint])

    def content(self) -> str:
        return stable_hash(self.model_dump(mode="json", exclude={"created_at", "source"}))


class ResultsFile(BaseModel):
    """A JSON file of generic results: {"results": [...]} (what `leaderboard import` reads
    besides run folders)."""

    model_config = ConfigDict(extra="forbid")

    results: list[GenericResult]


@dataclass(frozen=True)
class StoredRun:
    run_key: str
    run_id: str
    model_name: str
    model_backend: str
    model_fingerprint: str
    created_at: str
    finished_at: str | None
    harness_version: str
    git_commit: str | None
    run_path: str | None
    imported_at: str


@dataclass(frozen=True)
class StoredMetric:
    name: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_scored: int
    n_unscored: int
    ci_method: str


@dataclass(frozen=True)
class StoredTaskResult:
    result_key: str
    run: StoredRun
    task_key: str
    task: str
    task_version: int
    protocol: str
    n_shot: int
    task_fingerprint: str
    main_metric: str
    data_source: str
    split: str
    language: str
    n_samples: int
    metrics: dict[str, StoredMetric] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportOutcome:
    path: str
    run_key: str
    run_id: str
    model_name: str
    added: bool
    n_tasks: int


def run_key(record: RunRecord) -> str:
    return stable_hash([record.run_id, record.model.fingerprint])


def task_result_key(rkey: str, task_key: str, task_fingerprint: str) -> str:
    return stable_hash([rkey, task_key, task_fingerprint])


def _content_hash(record: RunRecord) -> str:
    # What the numbers are, not when the run.json was last rewritten.
    tasks = {k: [t.task_fingerprint, t.metrics] for k, t in record.tasks.items()}
    return stable_hash([record.model.fingerprint, tasks])


def _now() -> str:
    return datetime.now(UTC).isoformat()


def store_url(url_or_path: str | Path) -> str:
    """A SQLAlchemy URL as it is, or a file path as a SQLite URL."""
    text = str(url_or_path)
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _sqlite_setup(engine: Engine) -> None:
    # pysqlite's own transaction handling would BEGIN late and DEFERRED; a deferred writer that
    # meets another writer fails at once instead of waiting, so SQLAlchemy emits BEGIN itself
    # (IMMEDIATE for writes) and the busy timeout makes concurrent writers queue.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


class Store:
    """The results store at a SQLAlchemy URL or a SQLite file path."""

    def __init__(self, url_or_path: str | Path):
        self.url = store_url(url_or_path)
        try:
            self.engine = create_engine(self.url)
        except Exception as exc:  # bad URL or missing driver: one line naming the URL
            raise HarnessError(f"store {self.url}: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            _sqlite_setup(self.engine)
        self._create()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            yield conn

    def _create(self) -> None:
        try:
            with self._write() as conn:
                metadata.create_all(conn)
                row = conn.execute(select(store_info.c.value).where(store_info.c.key == "schema_version")).first()
                if row is None:
                    conn.execute(store_info.insert().values(key="schema_version", value=str(STORE_SCHEMA_VERSION)))
        except IntegrityError:
            pass  # another process created the store at the same moment
        except (OperationalError, ProgrammingError) as exc:
            if "already exists" not in str(exc):  # a server database racing on CREATE TABLE
                raise HarnessError(f"store {self.url}: {exc.orig}") from None
        with self.engine.connect() as conn:
            version = conn.execute(select(store_info.c.value).where(store_info.c.key == "schema_version")).scalar()
        if version != str(STORE_SCHEMA_VERSION):
            raise HarnessError(f"store {self.url}: schema_version {version!r} is not {STORE_SCHEMA_VERSION}")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def import_run(self, path: Path) -> ImportOutcome:
        """Store a finished run (a folder or its run.json). Returns whether it was new."""
        folder = run_dir(path)
        record = read_record(folder)
        if record.status != "finished":
            raise HarnessError(f"{folder / 'run.json'}: run status is {record.status!r}; only finished runs are stored")
        rkey, chash = run_key(record), _content_hash(record)
        outcome = ImportOutcome(str(folder), rkey, record.run_id, record.model.name, False, len(record.tasks))
        for _ in range(2):  # a concurrent import of the same run can win the insert race once
            existing = self._run_content(rkey)
            if existing is not None:
                if existing != chash:
                    raise HarnessError(
                        f"{folder / 'run.json'}: run {record.run_id} is already stored with different "
                        "results; stored records are immutable (write the new run to a new folder)"
                    )
                return outcome
            try:
                with self._write() as conn:
                    self._insert_run(conn, record, rkey, chash, folder)
            except IntegrityError:
                continue
            return ImportOutcome(outcome.path, rkey, record.run_id, record.model.name, True, len(record.tasks))
        raise HarnessError(f"{folder}: could not store run {record.run_id}")  # pragma: no cover

    def _run_content(self, rkey: str) -> str | None:
        with self.engine.connect() as conn:
            value: str | None = conn.execute(
                select(runs_table.c.content_hash).where(runs_table.c.run_key == rkey)
            ).scalar()
        return value

    def _insert_run(self, conn: Connection, record: RunRecord, rkey: str, chash: str, folder: Path) -> None:
        conn.execute(runs_table.insert().values(
            run_key=rkey, run_id=record.run_id, content_hash=chash, model_name=record.model.name,
            model_backend=record.model.backend, model_fingerprint=record.model.fingerprint,
            created_at=record.created_at, finished_at=record.finished_at,
            harness_version=record.harness_version, git_commit=record.git_commit,
            run_path=str(folder.resolve()), record=record.model_dump_json(), imported_at=_now(),
        ))
        for task_key, res in record.tasks.items():
            tkey = task_result_key(rkey, task_key, res.task_fingerprint)
            conn.execute(task_results_table.insert().values(
                result_key=tkey, run_key=rkey, task_key=task_key, task=res.task,
                task_version=res.task_version, protocol=res.protocol, n_shot=res.n_shot,
                task_fingerprint=res.task_fingerprint, main_metric=res.main_metric,
                data_source=res.data_source, split=res.split, language=res.language, n_samples=res.n_samples,
            ))
            rows = []
            for name, m in res.metrics.items():
                low, high = (m.get("ci") or [None, None])[:2]
                rows.append(dict(
                    result_key=tkey, name=name, value=m.get("value"), ci_low=low, ci_high=high,
                    n_scored=int(m.get("n_scored") or 0), n_unscored=int(m.get("n_unscored") or 0),
                    ci_method=str(m.get("ci_method") or "none"),
                    details=json.dumps(m["details"], sort_keys=True) if m.get("details") else None,
                ))
            if rows:
                conn.execute(metrics_table.insert(), rows)

    def add_results(self, results: Sequence[GenericResult]) -> int:
        """Store generic results; returns how many were new. An identical result already
        stored is skipped; a different one under the same key is refused."""
        added = 0
        for res in results:
            for _ in range(2):
                with self.engine.connect() as conn:
                    stored = conn.execute(
                        select(results_table).where(results_table.c.result_key == res.key)
                    ).mappings().first()
                if stored is not None:
                    if _generic_from_row(stored).content() != res.content():
                        raise HarnessError(
                            f"result {res.kind}/{res.name} for {res.model_name} (fingerprint "
                            f"{res.fingerprint[:12]}) is already stored with a different value; "
                            "stored records are immutable"
                        )
                    break
                try:
                    with self._write() as conn:
                        conn.execute(results_table.insert().values(
                            result_key=res.key, kind=res.kind, name=res.name, model_name=res.model_name,
                            model_fingerprint=res.model_fingerprint, fingerprint=res.fingerprint,
                            value=res.value, ci_low=res.ci[0], ci_high=res.ci[1], n=res.n,
                            n_unscored=res.n_unscored, source=res.source,
                            details=json.dumps(res.details, sort_keys=True), created_at=res.created_at or _now(),
                        ))
                except IntegrityError:
                    continue
                added += 1
                break
        return added

    def import_results_file(self, path: Path) -> int:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise HarnessError(f"{path}: cannot read: {exc}") from None
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        try:
            parsed = ResultsFile.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise HarnessError(f"{path}: field {loc}: {first['msg']}") from None
        items = [r if r.source else r.model_copy(update={"source": str(path.resolve())}) for r in parsed.results]
        return self.add_results(items)

    def import_path(self, path: Path) -> ImportOutcome | int:
        """A run folder (or run.json) -> ImportOutcome; any other JSON file -> generic results added."""
        if path.is_dir() or path.name == "run.json":
            return self.import_run(path)
        if path.is_file():
            return self.import_results_file(path)
        raise HarnessError(f"{path}: no such run folder or results file")

    # -- reading ---------------------------------------------------------------------------

    def runs(self) -> list[StoredRun]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(runs_table).order_by(runs_table.c.imported_at)).mappings().all()
        return [_run_from_row(r) for r in rows]

    def task_results(self) -> list[StoredTaskResult]:
        with self.engine.connect() as conn:
            runs = {r["run_key"]: _run_from_row(r) for r in conn.execute(select(runs_table)).mappings()}
            metrics: dict[str, dict[str, StoredMetric]] = {}
            for m in conn.execute(select(metrics_table)).mappings():
                metrics.setdefault(m["result_key"], {})[m["name"]] = StoredMetric(
                    m["name"], m["value"], m["ci_low"], m["ci_high"], m["n_scored"], m["n_unscored"], m["ci_method"]
                )
            rows = conn.execute(select(task_results_table)).mappings().all()
        return [
            StoredTaskResult(
                result_key=r["result_key"], run=runs[r["run_key"]], task_key=r["task_key"], task=r["task"],
                task_version=r["task_version"], protocol=r["protocol"], n_shot=r["n_shot"],
                task_fingerprint=r["task_fingerprint"], main_metric=r["main_metric"],
                data_source=r["data_source"], split=r["split"], language=r["language"],
                n_samples=r["n_samples"], metrics=metrics.get(r["result_key"], {}),
            )
            for r in rows
        ]

    def generic_results(self) -> list[GenericResult]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(results_table)).mappings().all()
        return [_generic_from_row(r) for r in rows]

    def record(self, rkey: str) -> RunRecord:
        with self.engine.connect() as conn:
            text = conn.execute(select(runs_table.c.record).where(runs_table.c.run_key == rkey)).scalar()
        if text is None:
            raise HarnessError(f"store {self.url}: no run {rkey}")
        return RunRecord.model_validate_json(text)


def _run_from_row(r: Any) -> StoredRun:
    return StoredRun(
        run_key=r["run_key"], run_id=r["run_id"], model_name=r["model_name"], model_backend=r["model_backend"],
        model_fingerprint=r["model_fingerprint"], created_at=r["created_at"], finished_at=r["finished_at"],
        harness_version=r["harness_version"], git_commit=r["git_commit"], run_path=r["run_path"],
        imported_at=r["imported_at"],
    )


def _generic_from_row(r: Any) -> GenericResult:
    return GenericResult(
        kind=r["kind"], name=r["name"], model_name=r["model_name"], model_fingerprint=r["model_fingerprint"],
        fingerprint=r["fingerprint"], value=r["value"], ci=(r["ci_low"], r["ci_high"]), n=r["n"],
        n_unscored=r["n_unscored"], source=r["source"], details=json.loads(r["details"] or "{}"),
        created_at=r["created_at"],
    )
