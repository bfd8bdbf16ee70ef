"""The same judge code path through an OpenAI-compatible server: llama.cpp's server serving the
default model's GGUF, driven by `harness judge calibrate --judge-backend openai`. Marked
`server`; skipped when llama-cpp-python is not installed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.default_model import gguf_path

# Long (3 min plus a server start): run on demand with `python -m pytest -m manual`.
pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.manual]
pytest.importorskip("llama_cpp", reason="llama-cpp-python[server] is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def judge_server() -> Iterator[tuple[str, str]]:
    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "8192", "--seed", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/models", timeout=2) as resp:
                model_id = json.loads(resp.read())["data"][0]["id"]
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("llama.cpp server exited at start-up")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama.cpp server did not start in 120 s")
    yield url, model_id
    proc.terminate()
    proc.wait(timeout=30)


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
