"""Run records: the versioned RunRecord schema of run.json (written and read through
harness.run.folder.RunFolder) and what it records of the environment."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import HarnessError
from harness.schema import read_json

SCHEMA_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelInfo(_Record):
    name: str = Field(description="What the user passed as --model.")
    backend: str
    fingerprint: str = Field(description="Content hash of the weights plus output-changing args.")
    args: dict[str, Any] = Field(default_factory=dict)


class TaskResult(_Record):
    task: str
    task_version: int
    group: str | None = None
    protocol: str
    n_shot: int
    fewshot_seed: int | None
    split: str
    language: str = "en"
    data_source: str
    data_fingerprint: str
    prompt_hash: str
    scorer: str
    task_fingerprint: str = Field(description="Records are comparable only when these match.")
    n_samples: int
    metrics: dict[str, dict[str, Any]]
    main_metric: str
    duration_s: float | None = None
    extra: dict[str, Any] = Field(default_factory=dict, description="Source-specific facts (e.g. lm-eval versions).")


class RunRecord(_Record):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    status: Literal["running", "finished", "failed"]
    created_at: str
    finished_at: str | None = None
    harness_version: str
    git_commit: str | None
    model: ModelInfo
    config: dict[str, Any]
    environment: dict[str, Any]
    tasks: dict[str, TaskResult] = Field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = Field(default_factory=dict)
    cache: dict[str, Any] = Field(default_factory=dict)
    requests: dict[str, Any] = Field(
        default_factory=dict, description="Retries, failures and token usage of the backend."
    )
    process: dict[str, Any] = Field(
        default_factory=dict, description="The process writing a running record (pid, host), so a reader "
        "can tell a live run from a killed one (run_state)."
    )

    def write(self, out_dir: Path) -> Path:
        path = out_dir / "run.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.model_dump_json(indent=2), encoding="utf-8")
        os.replace(tmp, path)
        return path


def this_process() -> dict[str, Any]:
    """The pid and host a running record names."""
    import socket

    return {"pid": os.getpid(), "host": socket.gethostname()}


def run_state(record: RunRecord) -> str:
    """The record's status, with a "running" record whose process is gone (on this host) shown as
    "interrupted": killed, or stopped without writing its status."""
    if record.status != "running" or not record.process:
        return record.status
    import socket

    if record.process.get("host") != socket.gethostname():
        return "running"  # another machine's process: cannot tell
    try:
        os.kill(int(record.process["pid"]), 0)
    except ProcessLookupError:
        return "interrupted"
    except (PermissionError, KeyError, TypeError, ValueError):
        return "running"
    return "running"


def read_record(path: Path) -> RunRecord:
    """Read run.json (or a run folder) with an error that names the file and the field."""
    if path.is_dir():
        path = path / "run.json"
    if not path.is_file():
        raise HarnessError(f"no run record at {path}")
    data = read_json(path)
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise HarnessError(f"{path}: schema_version {version!r} is not {SCHEMA_VERSION}")
    try:
        return RunRecord.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise HarnessError(f"{path}: field {loc}: {first['msg']}") from None


def git_commit() -> str | None:
    """The commit of the harness source, when it runs from a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=5,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    env: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("torch", "transformers", "datasets", "numpy", "scipy"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            env[pkg] = None
    from harness.run.threads import thread_settings

    env.update(thread_settings())  # CPU threads: the choice, its source, torch's actual count
    return env
