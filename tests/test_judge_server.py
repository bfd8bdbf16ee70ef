"""The same judge code path through an OpenAI-compatible server: llama.cpp's server serving the
default model's GGUF, driven by `harness judge calibrate --judge-backend openai`. Marked
`server`; skipped when llama-cpp-python is not installed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.openai_server import llama_cpp_server

# Long (3 min plus a server start): run on demand with `python -m pytest -m manual`.
pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.manual]
pytest.importorskip("llama_cpp", reason="llama-cpp-python[server] is not installed")


@pytest.fixture(scope="module")
def judge_server() -> Iterator[tuple[str, str]]:
    with llama_cpp_server("--n_ctx", "8192") as server:
        yield server


def test_calibrate_through_an_openai_compatible_judge(judge_server: tuple[str, str], shared_data: Path,
                                                      tmp_path: Path) -> None:
    from harness.cli import main

    url, model_id = judge_server
    out = tmp_path / "cal"
    rc = main(["judge", "calibrate", "--dataset", "mt_bench", "--data-dir", str(shared_data), "--limit", "3",
               "--judge-backend", "openai", "--judge", model_id, "--base-url", url, "--timeout", "300",
               "--concurrency", "2", "--judge-args", "extra.repeat_penalty=1.0", "--cache", str(tmp_path / "c.sqlite"),
               "--output", str(out), "--quiet"])
    assert rc == 0
    data = json.loads((out / "calibration.json").read_text())
    row = data["rows"][0]
    assert data["judge"]["backend"]["backend"] == "openai" and data["judge"]["backend"]["base_url"] == url
    assert row["n"] == 3 and row["tokens_per_judgement"] > 100  # usage reported by the server
    items = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
    assert len(items) == 3 and all(i["forward"]["raw"] and i["backward"]["raw"] for i in items)
    # a second run is served from the request cache: same verdicts, no server time
    rc = main(["judge", "calibrate", "--dataset", "mt_bench", "--data-dir", str(shared_data), "--limit", "3",
               "--judge-backend", "openai", "--judge", model_id, "--base-url", url, "--judge-args",
               "extra.repeat_penalty=1.0", "--cache", str(tmp_path / "c.sqlite"), "--output", str(tmp_path / "again"),
               "--quiet"])
    assert rc == 0
    again = json.loads((tmp_path / "again" / "calibration.json").read_text())
    assert again["rows"][0]["agreement"] == row["agreement"] and again["judge"]["fingerprint"] == data["judge"][
        "fingerprint"]
