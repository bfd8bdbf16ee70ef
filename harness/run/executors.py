"""Executors of `harness run`: where the shards of a run execute.

`local` (the default) is the Runner in this process. `ray` submits the N shards of the run
(`--shard I/N` runs, see harness.run.planning) as Ray tasks with the resources asked for, shows
one progress bar over all of them, and merges them (harness.run.merge) into one record equal to
an unsharded run's. Ray is an optional extra (`medllm-harness[ray]`), imported only here.

Storage: every shard is an ordinary resumable run folder, `OUTPUT/shards/I-of-N`, so OUTPUT must
be a path that every node sees (a shared file system, as with Slurm). A worker that dies loses
at most its current chunk: Ray retries the task (bounded `max_retries`) and the retry resumes
from the shard's samples.jsonl; Ctrl-C cancels the tasks and leaves every shard resumable; the
same command again resumes. Each task first checks that it sees the driver's marker file, so a
node without the shared path fails at once with a clear error instead of writing elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from harness.errors import HarnessError
from harness.run.config import RunConfig
from harness.run.execution import ProgressFactory
from harness.run.folder import SAMPLES_FILE, RunFolder
from harness.run.records import RunRecord

__all__ = ["EXECUTORS", "RayOptions", "require_ray", "run_on_ray", "shard_folder"]

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
SHARDS_DIR = "shards"
MARKER_FILE = "driver.json"
ATTEMPTS_FILE = "attempts.jsonl"
RAY_EXTRA_HINT = "--executor ray needs Ray: pip install 'medllm-harness[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """How `--executor ray` places the shards. None = decided from the cluster."""

    address: str | None = None  # None: RAY_ADDRESS, else a new local cluster; "auto"; "ray://HOST:PORT"
    shards: int | None = None  # None: one shard per gpus_per_shard GPUs of the cluster, 1 without GPUs
    gpus_per_shard: float | None = None  # None: 1 on a cluster with GPUs, else 0
    cpus_per_shard: float = 1.0
    max_retries: int = 3  # retries of a shard whose worker (or node) died; exceptions are not retried
    poll_s: float = 1.0  # how often the progress bar is refreshed


def require_ray() -> ModuleType:
    """Ray, or a one-line HarnessError naming the extra."""
    try:
        import ray
    except ImportError:
        raise HarnessError(RAY_EXTRA_HINT) from None
    return ray


def shard_folder(output: Path, index: int, count: int) -> Path:
    return Path(output) / SHARDS_DIR / f"{index}-of-{count}"


def _shard_layout(ray: ModuleType, options: RayOptions) -> tuple[int, float]:
    """(number of shards, GPUs per shard) from the options and the cluster's resources."""
    gpus = float(ray.cluster_resources().get("GPU", 0))
    per = options.gpus_per_shard if options.gpus_per_shard is not None else (1.0 if gpus else 0.0)
    if per < 0 or options.cpus_per_shard < 0:
        raise HarnessError("--gpus-per-shard and --cpus-per-shard must be >= 0")
    if per > gpus:
        raise HarnessError(f"--gpus-per-shard {per:g} but the Ray cluster has {gpus:g} GPU(s)")
    if options.shards is not None:
        if options.shards < 1:
            raise HarnessError(f"--shards must be >= 1, got {options.shards}")
        return options.shards, per
    return (max(1, int(gpus // per)) if per else 1), per


def _run_shard(config_data: dict[str, Any], marker: str, token: str) -> dict[str, Any]:
    """The body of one shard's Ray task: an ordinary (resumable) run of `--shard I/N`."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no per-worker bars on the driver's terminal
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # a reused worker
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    from harness.run.runner import Runner

    marker_path = Path(marker)
    try:
        seen = json.loads(marker_path.read_text(encoding="utf-8")).get("token")
    except (OSError, ValueError):
        seen = None
    if seen != token:
        raise HarnessError(f"node {socket.gethostname()} does not see {marker_path.parent}: the run folder must "
                           "be on a path all Ray nodes share")
    config = RunConfig(**config_data)
    attempt = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now(UTC).isoformat()}
    config.output.mkdir(parents=True, exist_ok=True)
    with (config.output / ATTEMPTS_FILE).open("a", encoding="utf-8") as f:  # who ran it: for logs and tests
        f.write(json.dumps(attempt) + "\n")
    record = Runner(config, progress=None).run()
    return {"status": record.status, **attempt}


class _Progress:
    """Samples scored over all shards, read from their samples.jsonl files (new bytes only)."""

    def __init__(self, paths: list[Path], total: int, progress: ProgressFactory | None):
        self.paths = paths
        self.offsets = [0] * len(paths)
        self.done = 0
        self.total = total
        self.bar = None
        self.poll()
        self.bar = progress("shards", total, min(self.done, total)) if progress is not None else None

    def poll(self) -> None:
        before = self.done
        for i, path in enumerate(self.paths):
            try:
                with path.open("rb") as f:
                    f.seek(self.offsets[i])
                    chunk = f.read()
            except FileNotFoundError:
                continue
            complete = chunk.rfind(b"\n") + 1
            self.done += chunk[:complete].count(b"\n")
            self.offsets[i] += complete
        if self.bar is not None and self.done > before:
            self.bar.update(min(self.done, self.total) - min(before, self.total))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _planned_samples(config: RunConfig) -> int:
    from harness.run.catalog import load_catalog
    from harness.run.planning import plan_run

    return sum(len(p.samples) for p in plan_run(config, load_catalog(config.task_dirs)))


def _connect(ray: ModuleType, address: str | None) -> None:
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address is None or not address.startswith("ray://"):
        kwargs["include_dashboard"] = False
    ray.init(address=address, **kwargs)


def _error_text(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__


def run_on_ray(config: RunConfig, options: RayOptions, progress: ProgressFactory | None = None) -> RunRecord:
    """Score `config` as N shards on a Ray cluster; return the merged record (written to config.output)."""
    from harness.run.merge import merge_runs

    ray = require_ray()
    if config.shard is not None:
        raise HarnessError("--executor ray shards the run itself: use --shards N instead of --shard I/N")
    folder = RunFolder(config.output)
    folder.claim(config.identity())
    if folder.has_record():
        record = folder.read_record()
        if record.status == "finished" and (config.output / SHARDS_DIR).is_dir():
            return record  # merged before: nothing left to score
        raise HarnessError(f"{config.output} holds a run made with --executor local; rerun it that way "
                           "or use another --output")
    _connect(ray, options.address)
    count, gpus = _shard_layout(ray, options)
    shards_dir = config.output / SHARDS_DIR
    shards_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(p.name for p in shards_dir.iterdir() if p.is_dir() and not p.name.endswith(f"-of-{count}"))
    if existing:
        raise HarnessError(f"{shards_dir} holds shards of another shard count ({existing[0]}); pass the same "
                           "--shards as before to resume, or use another --output")
    token = uuid.uuid4().hex
    marker = shards_dir / MARKER_FILE
    marker.write_text(json.dumps({"token": token, "host": socket.gethostname()}), encoding="utf-8")

    shard_configs = [config.model_copy(update={"shard": (i, count), "output": shard_folder(config.output, i, count)})
                     for i in range(count)]
    total = _planned_samples(config)
    task = ray.remote(_run_shard)
    placement = {"num_cpus": options.cpus_per_shard, "num_gpus": gpus, "max_retries": options.max_retries,
                 "retry_exceptions": False}  # a HarnessError is not retried; a dead worker is
    refs = {task.options(name=f"harness-shard-{i}-of-{count}", **placement).remote(
        c.model_dump(mode="json"), str(marker), token): c for i, c in enumerate(shard_configs)}
    bar = _Progress([c.output / SAMPLES_FILE for c in shard_configs], total, progress)
    failures: list[str] = []
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=options.poll_s)
            bar.poll()
            for ref in ready:
                shard = refs[ref].shard
                try:
                    ray.get(ref)
                except Exception as exc:  # a shard failed for good: let the others finish
                    failures.append(f"shard {shard[0] if shard else '?'}/{count}: {_error_text(exc)}")
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        log.warning("cancelled %d shard task(s); every shard is resumable: rerun the same command", len(pending))
        raise
    finally:
        bar.close()
    if failures:
        raise HarnessError("; ".join(failures) + " (rerun the same command to resume)")
    record = merge_runs([c.output for c in shard_configs], config.output)
    attempts = {f"{i}-of-{count}": _count_lines(shard_folder(config.output, i, count) / ATTEMPTS_FILE)
                for i in range(count)}
    record.requests = {**record.requests, "executor": {
        "name": "ray", "shards": count, "gpus_per_shard": gpus, "cpus_per_shard": options.cpus_per_shard,
        "max_retries": options.max_retries, "attempts": attempts, "ray_version": ray.__version__}}
    folder.write_record(record)
    return record


def _count_lines(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except FileNotFoundError:
        return 0

