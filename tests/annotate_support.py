"""Helpers of the annotation-app tests: run folders in the real formats (for unit tests; the
browser test uses real runs of the default model), and signing in through an invite link with
an HTTP client, the way a browser does (GET the link, POST its form with the CSRF token)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.run.records import ModelInfo, RunRecord, TaskResult
from harness.types import stable_hash

TASK_KEY = "mts_dialog_turn|generate_text|0shot"
PLANTED_SCRIPT = '<script>window.__pwned = 1; document.title = "pwned";</script>'


def conversation(k: int) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": f"What brings you in today ({k})?"},
            {"role": "user", "content": f"I have had symptom {k} for two days."}]


def make_run(folder: Path, outputs: Sequence[str | None], *, model_fp: str, name: str = "default",
             task_fp: str = "task-fp", rubrics: Sequence[Any] | None = None, finished_at: str | None = None) -> Path:
    """A finished run of one generative task: sample k answered outputs[k] (None: its request
    failed); rubrics[k], if given, is stored in the sample's metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, out in enumerate(outputs):
        meta: dict[str, Any] = {"request_failed": True} if out is None else {"output": out,
                                                                             "references": [f"reference {k}"]}
        entry: dict[str, Any] = {"task_key": TASK_KEY, "sample_id": f"mts-{k}", "index": k, "target": f"reference {k}",
                                 "prompt": conversation(k), "score": {"value": None if out is None else 0.1,
                                                                      "answer": out, "explanation": None,
                                                                      "metadata": meta}}
        if rubrics is not None and rubrics[k] is not None:
            entry["metadata"] = {"rubric": rubrics[k]}
        lines.append(entry)
    tasks = {TASK_KEY: TaskResult(
        task="mts_dialog_turn", task_version=1, protocol="generate_text", n_shot=0, fewshot_seed=None,
        split="test", data_source="bundled", data_fingerprint="d", prompt_hash="p", scorer="s",
        task_fingerprint=task_fp, n_samples=len(outputs),
        metrics={"rougeL": {"value": 0.1, "ci": [0.05, 0.15], "n_scored": len(outputs), "n_unscored": 0}},
        main_metric="rougeL")}
    stamp = finished_at or "2026-01-01T00:00:00+00:00"
    RunRecord(run_id=stable_hash(str(folder))[:12], status="finished", created_at=stamp, finished_at=stamp,
              harness_version="0.1.0", git_commit=None,
              model=ModelInfo(name=name, backend="hf", fingerprint=model_fp), config={}, environment={},
              tasks=tasks).write(folder)
    (folder / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


def hidden_fields(html: str) -> dict[str, str]:
    """The item form's hidden fields (the CSRF token and the signed time it was served)."""
    return dict(re.findall(r'<input type="hidden" name="(csrf|shown)" value="([^"]*)"', html))


def sign_in(client: Any, token: str) -> Any:
    page = client.get(f"/signin/{token}")
    assert page.status_code == 200, page.text
    r = client.post("/signin", data={"csrf": csrf_of(page.text), "token": token}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return r
