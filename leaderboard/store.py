"""Results store: finished runs, their task results and metrics, and generic results (judge
dimensions, Bradley–Terry ratings, ...) in SQLite (the default) or any SQLAlchemy database.

Records are immutable and keyed by fingerprints: a run by its run id and model fingerprint, a
task result by that plus the task key and task fingerprint. Importing the same run twice is a
no-op; a different record under a stored key is refused. Per-sample outcomes stay in the run
folder; the store keeps its path. A task result keeps its cost in USD where the run was priced
(leaderboard.cost; NULL where not), added to a stored run that had none, never changed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    select,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from harness.errors import HarnessError
from harness.run.folder import RunFolder
from harness.run.records import RunRecord, read_record
from harness.schema import read_json
from harness.scoring.cost import PriceTable
from leaderboard.cost import task_costs
from leaderboard.entries import (
    GenericResult,
    ImportOutcome,
    ResultsFile,
    StoredMetric,
    StoredRun,
    StoredTaskResult,
    content_hash,
    generic_from_row,
    run_from_row,
    run_key,
    task_result_key,
)
from leaderboard.tables import (
    STORE_SCHEMA_VERSION,
    metadata,
    metrics_table,
    results_table,
    runs_table,
    store_info,
    task_results_table,
)

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 60_000

def _scored_any(metric: dict[str, Any] | None) -> bool:
    return bool(metric) and int(metric.get("n_scored") or 0) > 0 and metric.get("value") is not None  # type: ignore[union-attr]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _add_missing_columns(conn: Connection) -> None:
    """Columns added to a table after stores were made (nullable, so old rows read as unknown)."""
    from sqlalchemy import inspect

    added = {"metrics": {"higher_is_better": "BOOLEAN"},
             "task_results": {"cost_usd": "FLOAT", "cost": "TEXT"}}
    for table, columns in added.items():
        have = {c["name"] for c in inspect(conn).get_columns(table)}
        for name, sql_type in columns.items():
            if name not in have:
                conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")


def _task_extras(record_json: str) -> dict[str, dict[str, Any]]:
    """task key -> the task's `extra` in a stored run record (grader prompt, aux models, ...)."""
    try:
        tasks = json.loads(record_json).get("tasks") or {}
    except (json.JSONDecodeError, AttributeError):
        return {}
    return {k: dict(t.get("extra") or {}) for k, t in tasks.items() if isinstance(t, dict)}


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
    def transaction(self) -> Iterator[Connection]:
        """A write transaction (IMMEDIATE on SQLite, so concurrent writers queue); for the tables of
        the store and of the packages that keep their own tables in it (judges.human)."""
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            yield conn

    def _create(self) -> None:
        try:
            with self.transaction() as conn:
                metadata.create_all(conn)
                _add_missing_columns(conn)
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

    def import_run(self, path: Path, price_table: PriceTable | None = None) -> ImportOutcome:
        """Store a finished run (a folder or its run.json). Returns whether it was new. Each task's
        cost comes from the run's cost.json, else from its samples' tokens priced with
        `price_table` (leaderboard.cost); a run stored before it had a cost gets it now (a stored
        cost is never changed)."""
        folder = RunFolder(path).path
        record = read_record(folder)
        if record.status != "finished":
            raise HarnessError(f"{folder / 'run.json'}: run status is {record.status!r}; only finished runs are stored")
        rkey, chash = run_key(record), content_hash(record)
        costs = task_costs(folder, record.model_dump(mode="json"), price_table)
        outcome = ImportOutcome(str(folder), rkey, record.run_id, record.model.name, False, len(record.tasks))
        for _ in range(2):  # a concurrent import of the same run can win the insert race once
            existing = self._run_content(rkey)
            if existing is not None:
                if existing != chash:
                    raise HarnessError(
                        f"{folder / 'run.json'}: run {record.run_id} is already stored with different "
                        "results; stored records are immutable (write the new run to a new folder)"
                    )
                return replace(outcome, n_costs=self._fill_costs(record, rkey, costs))
            try:
                with self.transaction() as conn:
                    n_costs = self._insert_run(conn, record, rkey, chash, folder, costs)
            except IntegrityError:
                continue
            return replace(outcome, added=True, n_costs=n_costs)
        raise HarnessError(f"{folder}: could not store run {record.run_id}")  # pragma: no cover

    def _run_content(self, rkey: str) -> str | None:
        with self.engine.connect() as conn:
            value: str | None = conn.execute(
                select(runs_table.c.content_hash).where(runs_table.c.run_key == rkey)
            ).scalar()
        return value

    def _fill_costs(self, record: RunRecord, rkey: str, costs: dict[str, dict[str, Any]]) -> int:
        """Costs for the stored task results of a run that have none yet; how many were filled."""
        filled = 0
        if not any(c["usd"] is not None for c in costs.values()):
            return 0
        with self.transaction() as conn:
            for task_key, res in record.tasks.items():
                cost = costs.get(task_key)
                if cost is None or cost["usd"] is None:
                    continue
                tkey = task_result_key(rkey, task_key, res.task_fingerprint)
                done = conn.execute(task_results_table.update().where(
                    (task_results_table.c.result_key == tkey) & task_results_table.c.cost_usd.is_(None)
                ).values(cost_usd=cost["usd"], cost=json.dumps(cost, sort_keys=True)))
                filled += done.rowcount or 0
        return filled

    def _insert_run(self, conn: Connection, record: RunRecord, rkey: str, chash: str, folder: Path,
                    costs: dict[str, dict[str, Any]]) -> int:
        conn.execute(runs_table.insert().values(
            run_key=rkey, run_id=record.run_id, content_hash=chash, model_name=record.model.name,
            model_backend=record.model.backend, model_fingerprint=record.model.fingerprint,
            created_at=record.created_at, finished_at=record.finished_at,
            harness_version=record.harness_version, git_commit=record.git_commit,
            run_path=str(folder.resolve()), record=record.model_dump_json(), imported_at=_now(),
        ))
        n_costs = 0
        for task_key, res in record.tasks.items():
            if not _scored_any(res.metrics.get(res.main_metric)):  # n = 0 is no result: never shown
                log.warning("run %s, task %s: nothing was scored (n = 0); not stored as a result",
                            record.run_id, task_key)
                continue
            tkey = task_result_key(rkey, task_key, res.task_fingerprint)
            cost = costs.get(task_key)
            priced = cost is not None and cost["usd"] is not None
            n_costs += priced
            conn.execute(task_results_table.insert().values(
                result_key=tkey, run_key=rkey, task_key=task_key, task=res.task,
                task_version=res.task_version, protocol=res.protocol, n_shot=res.n_shot,
                task_fingerprint=res.task_fingerprint, main_metric=res.main_metric,
                data_source=res.data_source, split=res.split, language=res.language, n_samples=res.n_samples,
                # an unpriced task keeps its token counts (cost) but no USD figure
                cost_usd=cost["usd"] if priced else None,  # type: ignore[index]
                cost=json.dumps(cost, sort_keys=True) if cost is not None else None,
            ))
            rows = []
            for name, m in res.metrics.items():
                low, high = (m.get("ci") or [None, None])[:2]
                rows.append(dict(
                    result_key=tkey, name=name, value=m.get("value"), ci_low=low, ci_high=high,
                    n_scored=int(m.get("n_scored") or 0), n_unscored=int(m.get("n_unscored") or 0),
                    ci_method=str(m.get("ci_method") or "none"),
                    details=json.dumps(m["details"], sort_keys=True) if m.get("details") else None,
                    higher_is_better=m.get("higher_is_better"),
                ))
            if rows:
                conn.execute(metrics_table.insert(), rows)
        return n_costs

    def add_results(self, results: Sequence[GenericResult]) -> int:
        """Store generic results; returns how many were new. An identical result already
        stored is skipped; a different one under the same key is refused."""
        added = 0
        for res in results:
            if res.n <= 0:  # e.g. a judge run that judged nothing
                log.warning("result %s/%s for %s: nothing was scored (n = 0); not stored", res.kind, res.name,
                            res.model_name)
                continue
            for _ in range(2):
                with self.engine.connect() as conn:
                    stored = conn.execute(
                        select(results_table).where(results_table.c.result_key == res.key)
                    ).mappings().first()
                if stored is not None:
                    if generic_from_row(stored).content() != res.content():
                        raise HarnessError(
                            f"result {res.kind}/{res.name} for {res.model_name} (fingerprint "
                            f"{res.fingerprint[:12]}) is already stored with a different value; "
                            "stored records are immutable"
                        )
                    break
                try:
                    with self.transaction() as conn:
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
        data = read_json(path)
        try:
            parsed = ResultsFile.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise HarnessError(f"{path}: field {loc}: {first['msg']}") from None
        items = [r if r.source else r.model_copy(update={"source": str(path.resolve())}) for r in parsed.results]
        return self.add_results(items)

    def import_path(self, path: Path, price_table: PriceTable | None = None) -> ImportOutcome | int:
        """A run folder (or run.json) -> ImportOutcome; any other JSON file -> generic results added."""
        if path.is_dir() or path.name == "run.json":
            return self.import_run(path, price_table)
        if path.is_file():
            return self.import_results_file(path)
        raise HarnessError(f"{path}: no such run folder or results file")

    # -- reading ---------------------------------------------------------------------------

    def runs(self) -> list[StoredRun]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(runs_table).order_by(runs_table.c.imported_at)).mappings().all()
        return [run_from_row(r) for r in rows]

    def task_results(self) -> list[StoredTaskResult]:
        with self.engine.connect() as conn:
            runs, extras = {}, {}
            for r in conn.execute(select(runs_table)).mappings():
                runs[r["run_key"]] = run_from_row(r)
                extras[r["run_key"]] = _task_extras(r["record"])
            metrics: dict[str, dict[str, StoredMetric]] = {}
            for m in conn.execute(select(metrics_table)).mappings():
                metrics.setdefault(m["result_key"], {})[m["name"]] = StoredMetric(
                    m["name"], m["value"], m["ci_low"], m["ci_high"], m["n_scored"], m["n_unscored"], m["ci_method"],
                    m["higher_is_better"],
                )
            rows = conn.execute(select(task_results_table)).mappings().all()
        return [
            StoredTaskResult(
                result_key=r["result_key"], run=runs[r["run_key"]], task_key=r["task_key"], task=r["task"],
                task_version=r["task_version"], protocol=r["protocol"], n_shot=r["n_shot"],
                task_fingerprint=r["task_fingerprint"], main_metric=r["main_metric"],
                data_source=r["data_source"], split=r["split"], language=r["language"],
                n_samples=r["n_samples"], metrics=metrics.get(r["result_key"], {}),
                extra=extras[r["run_key"]].get(r["task_key"], {}), cost_usd=r["cost_usd"],
                cost=json.loads(r["cost"]) if r["cost"] else None,
            )
            for r in rows
        ]

    def generic_results(self) -> list[GenericResult]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(results_table)).mappings().all()
        return [generic_from_row(r) for r in rows]

    def record(self, rkey: str) -> RunRecord:
        with self.engine.connect() as conn:
            text = conn.execute(select(runs_table.c.record).where(runs_table.c.run_key == rkey)).scalar()
        if text is None:
            raise HarnessError(f"store {self.url}: no run {rkey}")
        return RunRecord.model_validate_json(text)

__all__ = ["GenericResult", "ImportOutcome", "ResultsFile", "Store", "StoredMetric", "StoredRun",
           "StoredTaskResult", "run_key", "store_url", "task_result_key"]
