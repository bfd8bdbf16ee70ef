"""`url` sources (harness/data/remote.py): a pinned file at a fixed URL, downloaded once into the
data cache, verified before every use, read with the local readers. The file is served from a
loopback HTTP server: the first two rows of upstream's HealthBench main file (shared data)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.data import remote
from harness.data.remote import cache_path, digests
from harness.data.sources import read_local, read_split
from harness.data.spec import LocalSource, TaskSpec, load_task_file
from harness.errors import ConfigError, HarnessError
from harness.run.catalog import load_catalog
from tests.conftest import ROOT, ScriptedBackend

NAME = "2025-05-07-06-14-12_oss_eval.jsonl"


@dataclass
class Server:
    """Files by URL path; `fail` answers that many 503s first; `hits` the paths asked for."""

    files: dict[str, bytes]
    fail: dict[str, int] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    httpd: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.hits.append(self.path)
            if server.fail.get(self.path, 0) > 0:
                server.fail[self.path] -= 1
                self.send_error(503, "try later")
                return
            body = server.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
            pass

    return Handler


@pytest.fixture
def rows(shared_data: Path) -> bytes:
    """The first two rows of upstream's main file, as bytes (LF line ends)."""
    lines = (shared_data / "healthbench" / "oss_eval_sample.jsonl").read_bytes().splitlines(keepends=True)
    return b"".join(lines[:2])


@pytest.fixture
def server(rows: bytes) -> Iterator[Server]:
    s = Server({f"/hb/{NAME}": rows})
    s.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(s))
    thread = threading.Thread(target=s.httpd.serve_forever, daemon=True)
    thread.start()
    yield s
    s.stop()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data cache of the test's own, downloads on (conftest turns the HF offline switches on)."""
    folder = tmp_path / "data-cache"
    monkeypatch.setenv(remote.DATA_CACHE_ENV, str(folder))
    for name in (*remote.OFFLINE_ENVS, remote.ALLOW_UNPINNED_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(remote, "RETRY_DELAY_S", 0.0)
    return folder


@pytest.fixture(scope="module")
def healthbench() -> TaskSpec:
    return load_catalog().task("healthbench")


def _spec(spec: TaskSpec, **url: Any) -> TaskSpec:
    """The healthbench task with its url source changed (e.g. pointed at the loopback server)."""
    split = spec.splits["test"]
    assert split.url is not None
    src = split.url.model_copy(update=url)
    return spec.model_copy(update={"splits": {"test": split.model_copy(update={"url": src})}})


def _pinned(spec: TaskSpec, server: Server, rows: bytes) -> TaskSpec:
    import hashlib

    return _spec(spec, url=server.url(f"/hb/{NAME}"), sha256=hashlib.sha256(rows).hexdigest(), bytes=len(rows))


def _ids(rows: bytes) -> list[str]:
    return [json.loads(line)["prompt_id"] for line in rows.splitlines()]


def test_download_verifies_and_caches(healthbench: TaskSpec, server: Server, rows: bytes, tmp_path: Path) -> None:
    spec = _pinned(healthbench, server, rows)
    data = read_split(spec, "test", "url", None)
    assert [s.id for s in data.samples] == _ids(rows)
    url = server.url(f"/hb/{NAME}")
    cached = cache_path(url)
    assert cached.read_bytes() == rows and cached.is_relative_to(tmp_path / "data-cache")
    assert cached.parent.name == "hb" and cached.parent.parent.name.startswith("127.0.0.1_")
    assert list(cached.parent.iterdir()) == [cached]  # no partial download left behind
    assert data.record_extra() == {"remote": {"url": url, "sha256": spec.splits["test"].url.sha256,  # type: ignore[union-attr]
                                              "bytes": len(rows), "verified_by": ["sha256", "bytes"]}}
    # `hub` reads the url source of a split that has no hub source (healthbench's case)
    assert [s.id for s in read_split(spec, "test", "hub", None).samples] == _ids(rows)
    assert server.hits == [f"/hb/{NAME}"]  # downloaded once
    # the same samples as the same file read locally
    local = tmp_path / "local" / "healthbench"
    local.mkdir(parents=True)
    (local / NAME).write_bytes(rows)
    assert read_split(spec, "test", "local", tmp_path / "local").samples == data.samples


def test_second_read_uses_the_cache_without_network(healthbench: TaskSpec, server: Server, rows: bytes,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _pinned(healthbench, server, rows)
    first = read_split(spec, "test", "url", None)
    server.stop()
    again = read_split(spec, "test", "url", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = read_split(spec, "test", "url", None)
    assert first.samples == again.samples == offline.samples
    assert first.record_extra() == again.record_extra() == offline.record_extra()
    assert server.hits == [f"/hb/{NAME}"]


def test_sha256_mismatch_is_refused_and_nothing_is_cached(healthbench: TaskSpec, server: Server, rows: bytes) -> None:
    wrong = "0" * 64
    spec = _spec(_pinned(healthbench, server, rows), sha256=wrong)
    url = server.url(f"/hb/{NAME}")
    actual = digests_of(rows)
    with pytest.raises(HarnessError) as err:
        read_split(spec, "test", "url", None)
    message = str(err.value)
    assert url in message and f"sha256 expected {wrong}, got {actual}" in message
    assert "discarded" in message and "\n" not in message
    assert "task 'healthbench'" in message and "healthbench.yaml: splits.test.url" in message
    assert not cache_path(url).parent.exists() or not any(cache_path(url).parent.iterdir())


def digests_of(body: bytes) -> str:
    import hashlib

    return hashlib.sha256(body).hexdigest()


def test_a_cached_file_that_no_longer_matches_is_not_used(healthbench: TaskSpec, server: Server, rows: bytes,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    spec = _pinned(healthbench, server, rows)
    url = server.url(f"/hb/{NAME}")
    cached = cache_path(url)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(rows.splitlines(keepends=True)[0])  # a truncated copy
    with caplog.at_level(logging.WARNING, logger="harness.data.remote"):
        data = read_split(spec, "test", "url", None)  # online: removed and downloaded again
    assert [s.id for s in data.samples] == _ids(rows) and cached.read_bytes() == rows
    assert "does not match its pin" in caplog.text and server.hits == [f"/hb/{NAME}"]
    cached.write_bytes(rows.replace(b"a", b"b", 1))  # offline: removed, and an error
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(HarnessError, match=r"cached copy of .* did not match its pin \(sha256 expected .*\) "
                                           r"and was removed; downloads are off \(HF_DATASETS_OFFLINE=1\)"):
        read_split(spec, "test", "url", None)
    assert not cached.exists()


def test_size_pin_is_checked_too(healthbench: TaskSpec, server: Server, rows: bytes) -> None:
    spec = _spec(_pinned(healthbench, server, rows), bytes=len(rows) - 1)
    with pytest.raises(HarnessError, match=rf"larger than the {len(rows) - 1} bytes pinned"):
        read_split(spec, "test", "url", None)
    spec = _spec(spec, bytes=len(rows) + 1)
    with pytest.raises(HarnessError, match=rf"size expected {len(rows) + 1} bytes, got {len(rows)}"):
        read_split(spec, "test", "url", None)


def test_unpinned_needs_an_opt_in_then_warns_and_records(healthbench: TaskSpec, server: Server, rows: bytes,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    url = server.url(f"/hb/{NAME}")
    spec = _spec(healthbench, url=url, sha256=None, git_blob=None, bytes=len(rows))  # a size is no pin
    with pytest.raises(HarnessError, match=r"has no pin \(sha256: null and no git_blob\).*"
                                           r"MEDLLM_HARNESS_ALLOW_UNPINNED=1"):
        read_split(spec, "test", "url", None)
    assert server.hits == []  # refused before any download
    sha = digests_of(rows)
    with caplog.at_level(logging.WARNING, logger="harness.data.remote"):
        data = read_split(spec, "test", "url", None, allow_unpinned=True)
    assert "is not pinned; read unverified" in caplog.text and f"sha256: {sha}" in caplog.text
    assert data.record_extra()["remote"] == {"url": url, "sha256": sha, "bytes": len(rows),
                                             "verified_by": "unpinned (allowed)"}
    # the environment's opt-in (how `harness run` opts in), from the cache this time
    monkeypatch.setenv(remote.ALLOW_UNPINNED_ENV, "1")
    assert read_split(spec, "test", "url", None).record_extra() == data.record_extra()
    monkeypatch.setenv(remote.ALLOW_UNPINNED_ENV, "maybe")
    with pytest.raises(HarnessError, match=r"MEDLLM_HARNESS_ALLOW_UNPINNED='maybe': expected 1 or 0"):
        read_split(spec, "test", "url", None)


def test_git_blob_pins_a_file_without_a_sha256(healthbench: TaskSpec, server: Server, rows: bytes,
                                               tmp_path: Path) -> None:
    served = tmp_path / "served.jsonl"
    served.write_bytes(rows)
    blob = digests(served).git_blob
    if shutil.which("git"):  # the same id as git's own
        assert blob == subprocess.run(["git", "hash-object", str(served)], capture_output=True, text=True,
                                      check=True).stdout.strip()
    url = server.url(f"/hb/{NAME}")
    spec = _spec(healthbench, url=url, sha256=None, git_blob=blob, bytes=None)
    data = read_split(spec, "test", "url", None)  # no opt-in needed
    assert data.record_extra()["remote"] == {"url": url, "sha256": digests_of(rows), "bytes": len(rows),
                                             "verified_by": ["git_blob"], "git_blob": blob}
    wrong = _spec(spec, git_blob="1" * 40)
    with pytest.raises(HarnessError, match=rf"git blob expected {'1' * 40}, got {blob}"):
        read_split(wrong, "test", "url", None)


def test_offline_and_uncached_is_one_line_saying_how_to_get_it(healthbench: TaskSpec, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = healthbench.splits["test"].url
    assert src is not None
    with pytest.raises(HarnessError) as err:
        read_split(healthbench, "test", "hub", None)
    message = str(err.value)
    assert "\n" not in message and src.url in message and "downloads are off (HF_HUB_OFFLINE=1)" in message
    assert f"--data-dir DIR with it at DIR/healthbench/{NAME}" in message
    assert str(cache_path(src.url)) in message


def test_unreachable_server_is_one_line_without_retries(healthbench: TaskSpec, server: Server, rows: bytes) -> None:
    spec = _pinned(healthbench, server, rows)
    server.stop()  # connection refused: no point in trying again
    with pytest.raises(HarnessError, match=r"could not download http://127\.0\.0\.1:\d+/hb/.*: .*refused.*"
                                           r"download it by hand") as err:
        read_split(spec, "test", "url", None)
    assert "tries" not in str(err.value)


def test_transient_failures_are_retried_a_bounded_number_of_times(healthbench: TaskSpec, server: Server, rows: bytes,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    spec = _pinned(healthbench, server, rows)
    path = f"/hb/{NAME}"
    server.fail[path] = remote.ATTEMPTS - 1
    with caplog.at_level(logging.WARNING, logger="harness.data.remote"):
        assert [s.id for s in read_split(spec, "test", "url", None).samples] == _ids(rows)
    assert len(server.hits) == remote.ATTEMPTS and "HTTP 503" in caplog.text
    cache_path(server.url(path)).unlink()
    server.fail[path] = remote.ATTEMPTS
    with pytest.raises(HarnessError, match=rf"after {remote.ATTEMPTS} tries: HTTP 503"):
        read_split(spec, "test", "url", None)


def test_read_exactly_as_a_local_file(healthbench: TaskSpec, server: Server, rows: bytes, tmp_path: Path) -> None:
    """A BOM, CRLF line ends and an exact duplicate row: the same samples and duplicates as locally."""
    first = rows.splitlines()[0]
    body = b"\xef\xbb\xbf" + b"".join(line + b"\r\n" for line in [*rows.splitlines(), first])
    server.files["/hb/crlf.jsonl"] = body
    spec = _spec(healthbench, url=server.url("/hb/crlf.jsonl"), sha256=digests_of(body), bytes=len(body))
    remote_data = read_split(spec, "test", "url", None)
    (tmp_path / "crlf.jsonl").write_bytes(body)
    local_data = read_local(LocalSource(path="crlf.jsonl", reader="jsonl", record="healthbench"), tmp_path)
    assert remote_data.samples == local_data.samples and len(remote_data.samples) == 3
    assert remote_data.duplicates == local_data.duplicates == [[1, 3]]
    assert remote_data.record_extra()["duplicates"] == [[1, 3]]
    assert not any("\ufeff" in k or "\r" in json.dumps(s.to_json()) for s in remote_data.samples
                   for k in s.metadata)


def _write_task(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "remote_task.yaml"
    path.write_text(text)
    return path


_TASK = """task: remote_task
version: 1
format: next_turn
eval_split: test
protocols: {rubric: {max_tokens: 16}}
default_protocol: rubric
metrics: [rubric_score]
splits:
  test:
    url: {URL}
"""


@pytest.mark.parametrize("url, problem", [
    ("{url: 'https://example.org/x.jsonl', reader: jsonl, record: healthbench}",
     r"splits\.test\.url\.sha256: Field required"),
    ("{url: 'https://example.org/x.jsonl', sha256: abc, reader: jsonl, record: healthbench}",
     r"splits\.test\.url\.sha256: Value error, expected 64 hex digits \(got 'abc'\)"),
    ("{url: 'ftp://example.org/x.jsonl', sha256: null, reader: jsonl, record: healthbench}",
     r"splits\.test\.url\.url: Value error, expected an http\(s\) URL of a file \(got 'ftp://example.org/x.jsonl'\)"),
    ("{url: 'https://example.org/x.jsonl', sha256: null, git_blob: 12, reader: jsonl, record: healthbench}",
     r"splits\.test\.url\.git_blob: Input should be a valid string"),
])
def test_yaml_errors_name_the_file_and_key(tmp_path: Path, url: str, problem: str) -> None:
    path = _write_task(tmp_path, _TASK.replace("{URL}", url))
    with pytest.raises(ConfigError, match=rf"{path.name}: .*{problem}"):
        load_task_file(path)


def test_bundled_url_sources_are_pinned() -> None:
    """Every url source in tasks/ has a pin (none relies on the opt-in); HealthBench's main file
    has upstream's sha256 and size from the manifest, Hard and Consensus their git blob ids."""
    cat = load_catalog()
    found = {}
    for spec in cat.tasks.values():
        for split in spec.splits.values():
            if split.url is not None:
                assert split.url.pinned, spec.task
                found[spec.task] = split.url
    assert set(found) >= {"healthbench", "healthbench_hard", "healthbench_consensus"}
    assert found["healthbench"].sha256 == "e99dd3c6372c10d6fcc5e385c5fae69d0dd40392dae56836ef9493ae324ecd2f"
    assert found["healthbench"].bytes == 60_258_154
    assert found["healthbench_hard"].git_blob == "22d2fd20279aa4ba8e5139c64b98e0a5e3dd2c79"
    assert found["healthbench_consensus"].git_blob == "a88425acdd32ecb9118bd4a94d9fc6d8f25e9b8b"
    assert all(src.url.startswith("https://openaipublic.blob.core.windows.net/simple-evals/healthbench/")
               for src in found.values())


def _met_if_positive(request: Any) -> str:
    import re

    text = next(m.content for m in reversed(request.messages) if m.role == "user" and "RUBRIC CRITERION" in m.content)
    points = float(re.findall(r"\n\[(-?\d+(?:\.\d+)?)\] ", text)[-1])
    return json.dumps({"explanation": "scripted", "criteria_met": points > 0})


def test_run_record_carries_the_url_and_sha256(server: Server, rows: bytes, tmp_path: Path) -> None:
    """`harness run`'s runner on the loopback file (scripted candidate and grader): the task's record
    names the URL and the sha256 verified; the data fingerprint is the local file's."""
    from harness.run.config import AuxModel, RunConfig
    from harness.run.runner import Runner

    family = yaml.safe_load((ROOT / "tasks" / "healthbench.yaml").read_text())
    task = {**family["defaults"], **family["tasks"][0], "task": "healthbench_loopback"}
    sha = digests_of(rows)
    task["splits"]["test"]["url"].update(url=server.url(f"/hb/{NAME}"), sha256=sha, bytes=len(rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "loopback.yaml").write_text(yaml.safe_dump(task))
    local = tmp_path / "local" / "healthbench"
    local.mkdir(parents=True)
    (local / NAME).write_bytes(rows)

    def run(name: str, source: str, data_dir: Path | None) -> Any:
        config = RunConfig(tasks=("healthbench_loopback",), data_source=source, data_dir=data_dir,  # type: ignore[arg-type]
                           output=tmp_path / name, cache=None, task_dirs=(tasks,),
                           aux_models={"grader": AuxModel(backend="scripted", model="grader-x")})
        record = Runner(config, backend=ScriptedBackend(lambda r: "Call an ambulance now."),
                        aux_backends={"grader": ScriptedBackend(_met_if_positive)}).run()
        return record.tasks["healthbench_loopback|rubric|0shot"]

    remote_res = run("remote", "hub", None)
    assert remote_res.data_source == "hub" and remote_res.n_samples == 2
    assert remote_res.metrics["rubric_score"]["value"] == pytest.approx(1.0)
    assert remote_res.extra["remote"] == {"url": server.url(f"/hb/{NAME}"), "sha256": sha, "bytes": len(rows),
                                          "verified_by": ["sha256", "bytes"]}
    stored = json.loads((tmp_path / "remote" / "run.json").read_text())
    assert stored["tasks"]["healthbench_loopback|rubric|0shot"]["extra"]["remote"]["sha256"] == sha
    local_res = run("local", "local", tmp_path / "local")
    assert "remote" not in local_res.extra
    # the content, wherever it came from: the same file read locally is the same task
    assert (local_res.data_fingerprint, local_res.task_fingerprint) == (remote_res.data_fingerprint,
                                                                        remote_res.task_fingerprint)


def test_run_flag_allows_an_unpinned_source(server: Server, rows: bytes, tmp_path: Path) -> None:
    """`harness run --allow-unpinned` (the flag, not the environment) reaches the planner, which then
    reads an unpinned url source; without it planning stops before any download, naming the opt-ins."""
    from harness.cli.app import build_parser
    from harness.run.catalog import load_catalog as catalog_of
    from harness.run.config import AuxModel, RunConfig
    from harness.run.planning import plan_run

    family = yaml.safe_load((ROOT / "tasks" / "healthbench.yaml").read_text())
    task = {**family["defaults"], **family["tasks"][0], "task": "healthbench_unpinned"}
    task["splits"]["test"]["url"].update(url=server.url(f"/hb/{NAME}"), sha256=None, git_blob=None, bytes=None)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "unpinned.yaml").write_text(yaml.safe_dump(task))

    def config(allow: bool) -> RunConfig:
        return RunConfig(tasks=("healthbench_unpinned",), data_source="hub", output=tmp_path / "run", cache=None,
                         task_dirs=(tasks,), allow_unpinned=allow,
                         aux_models={"grader": AuxModel(backend="scripted", model="grader-x")})

    catalog = catalog_of((tasks,))
    with pytest.raises(HarnessError, match=r"has no pin.*harness run --allow-unpinned"):
        plan_run(config(False), catalog)
    assert server.hits == []
    (plan,) = plan_run(config(True), catalog)
    assert len(plan.samples) == 2 and plan.data_extra["remote"]["verified_by"] == "unpinned (allowed)"
    assert "allow_unpinned" not in config(True).identity()  # a permission, not part of the run's identity
    args = build_parser().parse_args(["run", "--tasks", "healthbench_unpinned", "--allow-unpinned"])
    assert args.allow_unpinned is True
