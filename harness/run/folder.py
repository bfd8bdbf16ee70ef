"""RunFolder: the one owner of a run folder's files.

    config.json     the settings that identify the run (RunConfig.identity()); a rerun with other
                    settings is refused, a rerun with the same settings resumes
    run.json        the RunRecord (harness.run.records), rewritten atomically after every task
    samples.jsonl   one line per scored sample, appended and fsynced chunk by chunk

Writers open the sample log for appending (SampleLog, which trims a line torn by a kill);
readers (leaderboard, judges, merge) read it without writing (RunFolder.read_samples).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.run.records import RunRecord, read_record
from harness.types import Score

CONFIG_FILE = "config.json"
RECORD_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"


def score_to_json(score: Score) -> dict[str, Any]:
    return {"value": score.value, "answer": score.answer, "explanation": score.explanation,
            "metadata": dict(score.metadata)}


def score_from_json(data: dict[str, Any]) -> Score:
    value = data.get("value")
    return Score(None if value is None else float(value), data.get("answer"), data.get("explanation"),
                 dict(data.get("metadata") or {}))


def entry_score(entry: dict[str, Any]) -> Score:
    """The Score of one samples.jsonl entry."""
    return score_from_json(entry["score"])


def _check_entry(path: Path, lineno: int, entry: Any) -> None:
    for key in ("task_key", "sample_id", "score"):
        if not isinstance(entry, dict) or key not in entry:
            raise HarnessError(f"{path}:{lineno}: missing field {key!r}")
    if not isinstance(entry["score"], dict) or "value" not in entry["score"]:
        raise HarnessError(f"{path}:{lineno}: field score.value is missing")


def _decode_lines(path: Path, text: str, *, torn_tail_ok: bool) -> Iterable[tuple[int, dict[str, Any]]]:
    """The one decoder of samples.jsonl lines: (line number, entry), validated."""
    lines = text.split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            if torn_tail_ok and lineno == len(lines):  # a run killed mid-write
                return
            raise HarnessError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
        _check_entry(path, lineno, entry)
        yield lineno, entry


class SampleLog:
    """Append-only samples.jsonl. A line torn by a kill is dropped on open (the file is cut
    back to the last complete line) so the rerun scores that sample again."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[tuple[str, str], dict[str, Any]] = {}
        if path.exists():
            self._load()
        self._fh = path.open("a", encoding="utf-8")

    def _load(self) -> None:
        raw = self.path.read_bytes()
        good_end = raw.rfind(b"\n") + 1
        if good_end < len(raw):
            with self.path.open("r+b") as f:
                f.truncate(good_end)
        for _, entry in _decode_lines(self.path, raw[:good_end].decode("utf-8"), torn_tail_ok=False):
            self.entries[(entry["task_key"], entry["sample_id"])] = entry

    def done(self, task_key: str) -> set[str]:
        """Samples already scored; those whose requests failed are tried again on resume."""
        return {
            sid for (key, sid), e in self.entries.items()
            if key == task_key and not e["score"].get("metadata", {}).get("request_failed")
        }

    def for_task(self, task_key: str) -> list[dict[str, Any]]:
        return [e for (key, _), e in self.entries.items() if key == task_key]

    def append(self, entries: Iterable[dict[str, Any]]) -> None:
        lines = []
        for entry in entries:
            self.entries[(entry["task_key"], entry["sample_id"])] = entry
            lines.append(json.dumps(entry, ensure_ascii=False) + "\n")
        self._fh.write("".join(lines))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> SampleLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class PreviousRun:
    """What a folder's earlier run.json pins: its id and start, and its model fingerprint."""

    run_id: str
    created_at: str
    model_fingerprint: str | None


class RunFolder:
    def __init__(self, path: Path):
        path = Path(path)
        # a run.json given for its folder
        self.path = path.parent if path.name == RECORD_FILE and not path.is_dir() else path

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def record_path(self) -> Path:
        return self.path / RECORD_FILE

    @property
    def samples_path(self) -> Path:
        return self.path / SAMPLES_FILE

    def has_record(self) -> bool:
        return self.record_path.exists()

    # config.json
    def read_identity(self) -> dict[str, Any]:
        if not self.config_path.is_file():
            raise HarnessError(f"{self.path}: no {CONFIG_FILE} (is it a run folder?)")
        try:
            data: dict[str, Any] = json.loads(self.config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{self.config_path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        return data

    def write_identity(self, identity: dict[str, Any]) -> None:
        self.config_path.write_text(json.dumps(identity, indent=2, sort_keys=True), encoding="utf-8")

    def claim(self, identity: dict[str, Any]) -> None:
        """Create the folder for a run with these settings, or check that the run it holds has
        them (a resume); refuse a folder holding a run with other settings."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            self.write_identity(identity)
            return
        previous = self.read_identity()
        diff = sorted(k for k in {*previous, *identity} if previous.get(k) != identity.get(k))
        if diff:
            raise HarnessError(
                f"{self.path} holds a run with different settings ({', '.join(diff)}); "
                "use another --output or delete that folder"
            )

    # run.json
    def previous_run(self) -> PreviousRun | None:
        """The earlier record's identity, so a resumed run keeps its id; None for a new folder."""
        if not self.record_path.exists():
            return None
        try:
            old = json.loads(self.record_path.read_text(encoding="utf-8"))
            return PreviousRun(str(old["run_id"]), str(old["created_at"]), old["model"]["fingerprint"])
        except (json.JSONDecodeError, KeyError, TypeError):
            return None

    def check_model(self, fingerprint: str, what: str = "model weights") -> PreviousRun | None:
        """Refuse to resume a folder started with another model."""
        previous = self.previous_run()
        if previous is not None and previous.model_fingerprint not in (None, fingerprint):
            raise HarnessError(
                f"{self.path} was started with other {what} (fingerprint {previous.model_fingerprint[:12]}, "
                f"now {fingerprint[:12]}); use another --output"
            )
        return previous

    def write_record(self, record: RunRecord) -> Path:
        return record.write(self.path)

    def read_record(self) -> RunRecord:
        return read_record(self.record_path)

    # samples.jsonl
    def sample_log(self) -> SampleLog:
        """The sample log for a writer (a run that scores or resumes)."""
        return SampleLog(self.samples_path)

    def read_samples(self) -> dict[str, dict[str, dict[str, Any]]]:
        """task_key -> sample_id -> entry (task_key, sample_id, index, target, prompt, score), for
        readers: never writes. A later line for the same sample replaces an earlier one (a resumed
        run re-scores samples whose requests failed); a torn last line is ignored."""
        if not self.samples_path.is_file():
            raise HarnessError(f"no samples file at {self.samples_path}")
        out: dict[str, dict[str, dict[str, Any]]] = {}
        text = self.samples_path.read_text(encoding="utf-8")
        for _, entry in _decode_lines(self.samples_path, text, torn_tail_ok=True):
            out.setdefault(str(entry["task_key"]), {})[str(entry["sample_id"])] = entry
        return out

    def write_samples(self, entries: Iterable[dict[str, Any]]) -> None:
        """Write a whole samples file at once (merge)."""
        with self.samples_path.open("w", encoding="utf-8") as f:
            for entry in entries:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
