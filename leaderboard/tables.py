"""Tables of the results store (SQLAlchemy Core); one place for the schema."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, ForeignKey, Integer, MetaData, String, Table, Text

STORE_SCHEMA_VERSION = 1

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
    # added later (nullable; NULL = unpriced): USD of the task's recorded tokens, and how it was
    # priced (JSON: roles, tokens, price table)
    Column("cost_usd", Float),
    Column("cost", Text),
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
    # from run.json; NULL for records written before the direction was recorded
    Column("higher_is_better", Boolean),
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


