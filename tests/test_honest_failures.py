"""Issue 15: prompts longer than the model's context and failed requests never pass silently.

Unit tests on a scripted backend that declares a context; the real default model and the
OpenAI-compatible backend against a local fault-injecting server through the real CLI."""

import json

import pytest

from harness.backends.context import display, fit_request
from harness.cli.app import main
from harness.run.config import RunConfig
from harness.run.records import read_record
from harness.run.report import format_record
from harness.run.runner import Runner
from harness.types import GenerationConfig, GenerationRequest, LoglikelihoodRequest, Message
from tests.conftest import ScriptedBackend
from tests.openai_server import FaultServer

KEY = "medqa|loglik|0shot"


class ShortContext(ScriptedBackend):
    """A scripted backend with a 60-"token" context; a token is a whitespace-separated word."""

    def context_length(self):
        return 60

    def count_tokens(self, request):
        if isinstance(request, LoglikelihoodRequest):
            return len((request.context + request.continuation).split())
        text = request.prompt or " ".join(m.content for m in request.messages)
        return len(text.split())

    def shorten(self, text, n_tokens, side):
        words = text.split(" ")
        keep = len(words) - n_tokens
        if side == "left":
            return " ".join(words[-keep:])
        return " ".join(words[: keep // 2] + words[len(words) - (keep - keep // 2):])


def medqa_file(tmp_path, long_words=5000):
    recs = [{"question": f"Short question {i}?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"},
             "answer_idx": "A"} for i in range(4)]
    recs[1]["question"] = "START " + " ".join(f"w{i}" for i in range(long_words)) + " END?"
    path = tmp_path / "data/medqa/us_4options_test.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return tmp_path / "data"


def config(tmp_path, **kw):
    return RunConfig(tasks=("medqa",), data_source="local", data_dir=medqa_file(tmp_path), cache=None,
                     output=tmp_path / kw.pop("name", "run"), **kw)


def test_a_prompt_longer_than_the_context_is_unscored_not_sent(tmp_path, caplog):
    backend = ShortContext()
    record = Runner(config(tmp_path), backend=backend).run()
    res = record.tasks[KEY]
    acc = res.metrics["accuracy"]
    assert acc["n_scored"] == 3 and acc["n_unscored"] == 1  # the other samples are scored as usual
    assert res.extra["unscored"] == {"prompt exceeds context": 1}
    assert "request_failed" not in res.extra
    assert not any("START" in r.context for r in backend.loglik_calls)  # never sent to the model
    lines = [json.loads(x) for x in (tmp_path / "run/samples.jsonl").read_text().splitlines()]
    (long,) = [x for x in lines if x["score"]["value"] is None]
    assert long["score"]["explanation"] == "prompt exceeds context: 5013 tokens > 60"
    table = format_record(record)
    assert f"{KEY}: 1 unscored: prompt exceeds context" in table
    assert caplog.text.count("prompt exceeds context: 5013 tokens > 60") == 1  # once a sample
    assert "w2500" not in caplog.text  # a shortened display, never the whole text


@pytest.mark.parametrize("side", ["left", "middle"])
def test_truncate_is_opt_in_recorded_and_counted(tmp_path, side):
    backend = ShortContext()
    plain = Runner(config(tmp_path, name="plain"), backend=ShortContext()).run()
    record = Runner(config(tmp_path, truncate=side, name="cut"), backend=backend).run()
    res = record.tasks[KEY]
    assert res.metrics["accuracy"]["n_scored"] == 4 and res.extra["truncated_prompts"] == 1
    assert res.extra["truncate"] == side and record.config["truncate"] == side
    assert res.task_fingerprint != plain.tasks[KEY].task_fingerprint
    sent = [r.context for r in backend.loglik_calls if "END?" in r.context or "START" in r.context]
    assert sent and all(len((r + " A").split()) <= 60 for r in sent)
    assert all(("START" in c) == (side == "middle") for c in sent)
    lines = [json.loads(x) for x in (tmp_path / "cut/samples.jsonl").read_text().splitlines()]
    assert sum(x["score"]["metadata"].get("truncated") == side for x in lines) == 1
    assert "1 prompt(s) truncated" in format_record(record)


def test_generation_requests_leave_room_for_the_answer():
    backend = ShortContext()
    req = GenerationRequest(messages=(Message("user", " ".join(["x"] * 50)),), config=GenerationConfig(max_tokens=20))
    fitted = fit_request(backend, req, None)
    assert fitted.request is None and fitted.failure().reason == "prompt exceeds context: 50 tokens > 40"
    cut = fit_request(backend, req, "left")
    assert cut.truncated and backend.count_tokens(cut.request) <= 40
    assert fit_request(ScriptedBackend(), req, None).request is req  # unknown context: sent as is


def test_display_is_short():
    text = "a" * 100_000 + "END"
    assert len(display(text)) < 120 and "100,003 chars" in display(text)


def test_real_model_long_prompt_is_unscored_then_truncated(tmp_path, capsys, default_model_dir):
    """The default model through the CLI, its context set to 512 tokens so the check is cheap."""
    data = medqa_file(tmp_path, long_words=3000)
    args = ["run", "--tasks", "medqa", "--data-dir", str(data), "--no-cache", "--quiet",
            "--model-args", "max_length=512"]
    assert main([*args, "--output", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    res = read_record(tmp_path / "a").tasks[KEY]
    assert res.metrics["accuracy"]["n_scored"] == 3 and res.extra["unscored"] == {"prompt exceeds context": 1}
    assert f"{KEY}: 1 unscored: prompt exceeds context" in out
    line = json.loads(next(x for x in (tmp_path / "a/samples.jsonl").read_text().splitlines() if "START" in x))
    assert line["score"]["explanation"].startswith("prompt exceeds context: ")
    assert line["score"]["explanation"].endswith(" tokens > 512")
    assert main([*args, "--truncate", "left", "--output", str(tmp_path / "b")]) == 0
    res = read_record(tmp_path / "b").tasks[KEY]
    assert res.metrics["accuracy"]["n_scored"] == 4 and res.extra["truncated_prompts"] == 1


def openai_args(server, tmp_path, *extra):
    return ["run", "--backend", "openai", "--model", "test-model", "--base-url", server.url, "--tasks", "medqa",
            "--protocol", "generate", "--data-source", "bundled", "--limit", "10", "--no-cache", "--quiet",
            "--output", str(tmp_path / "run"), *extra]


@pytest.mark.parametrize(("fault", "expect"), [("401", "HTTP 401"), ("404", "does not exist")])
def test_auth_and_unknown_model_stop_at_the_first_request(tmp_path, capsys, fault, expect):
    with FaultServer(faults=lambda n, body: (fault,)) as server:
        rc = main(openai_args(server, tmp_path))
        assert len(server.requests) == 1
    err = capsys.readouterr().err
    assert rc == 2 and expect in err and "stopping the run" in err
    assert len(err.strip().splitlines()) == 1
    assert read_record(tmp_path / "run").status == "failed"


def test_failed_requests_are_reported_and_exit_3(tmp_path, capsys):
    with FaultServer(faults=lambda n, body: ("500",) if n > 0 else None) as server:
        rc = main(openai_args(server, tmp_path, "--max-attempts", "1"))
    cap = capsys.readouterr()
    assert rc == 3 and "--allow-unscored" in cap.err
    assert "medqa|generate|0shot: 9 unscored: request failed: HTTP 500" in cap.out
    assert cap.out.count("first error: request failed: HTTP 500") == 1
    res = read_record(tmp_path / "run").tasks["medqa|generate|0shot"]
    assert res.extra["request_failed"] == 9
    with FaultServer(faults=lambda n, body: ("500",) if n > 0 else None) as server:
        args = openai_args(server, tmp_path, "--max-attempts", "1", "--allow-unscored")
        rc = main([*args, "--output", str(tmp_path / "allowed")])
    assert rc == 0


def test_everything_scored_exits_0(tmp_path, capsys):
    with FaultServer() as server:
        assert main(openai_args(server, tmp_path)) == 0
    assert "unscored:" not in capsys.readouterr().out


def test_show_on_a_killed_run_says_interrupted_and_shows_what_it_scored(tmp_path, capsys):
    import socket
    import subprocess
    import sys

    cfg = RunConfig(tasks=("medqa", "pubmedqa"), data_source="bundled", output=tmp_path / "run", cache=None)
    record = Runner(cfg, backend=ScriptedBackend()).run()
    assert record.process == {}  # a finished record names no process
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = record.model_copy(update={"status": "running", "tasks": {}, "groups": {},
                                       "process": {"pid": dead.pid, "host": socket.gethostname()}})
    killed.write(tmp_path / "run")
    assert main(["show", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"run {record.run_id} (interrupted)" in out
    assert "medqa|loglik|0shot: not finished; 50 samples on disk (50 scored, 0 unscored)" in out
    live = killed.model_copy(update={"process": {"pid": __import__("os").getpid(), "host": socket.gethostname()}})
    live.write(tmp_path / "run")
    assert main(["show", str(tmp_path / "run")]) == 0
    assert f"run {record.run_id} (running)" in capsys.readouterr().out


class Slow(ScriptedBackend):
    def loglikelihood(self, requests):
        import time

        time.sleep(0.05)
        return super().loglikelihood(requests)


def test_resumed_task_duration_is_the_sum_of_its_sessions(tmp_path):
    cfg = RunConfig(tasks=("medqa",), data_source="bundled", output=tmp_path / "run", cache=None)
    Runner(cfg, backend=Slow(), chunk_size=10).run()
    log = tmp_path / "run/samples.jsonl"
    kept = log.read_text().splitlines()[:30]  # killed after three chunks
    log.write_text("\n".join(kept) + "\n")
    first_session = sum(json.loads(x)["elapsed_s"] for x in kept)
    record = Runner(cfg, backend=Slow(), chunk_size=10).run()
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    total = sum(e["elapsed_s"] for e in entries)
    assert total >= first_session + 0.09 and first_session >= 0.14  # 3 chunks, then 2 more
    assert record.tasks[KEY].duration_s == pytest.approx(total, abs=1e-3)


def test_unknown_model_args_key_is_named_with_the_accepted_keys(tmp_path, capsys):
    rc = main(["run", "--model-args", "flash_attn=1", "--tasks", "medqa", "--data-source", "bundled",
               "--limit", "1", "--no-cache", "--quiet", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "unknown --model-args key 'flash_attn' for the hf backend; accepted keys: " in err
    assert "dtype" in err and "max_length" in err and "TypeError" not in err


def test_the_python_api_uses_the_cli_request_cache_by_default(tmp_path):
    from harness.cli.options import default_cache

    cfg = dict(tasks=("medqa",), data_source="bundled", output=tmp_path / "run")
    assert Runner(RunConfig(**cfg)).config.cache == default_cache()
    assert Runner(RunConfig(**cfg, cache=None)).config.cache is None  # explicitly off stays off
    assert Runner(RunConfig(**cfg), backend=ScriptedBackend()).config.cache is None  # a given backend: as configured


def test_real_server_context_is_checked_before_sending_and_a_refusal_is_not_a_failure(tmp_path, capsys):
    """llama-cpp-python's server on the default model (n_ctx 512) through the CLI: without a declared
    context its 400 refusal counts as "prompt exceeds context" (exit 0, not 3); with
    context_length=512 the long prompt is counted there (/extras/tokenize/count) and never sent."""
    from tests.openai_server import llama_cpp_server

    data = medqa_file(tmp_path, long_words=3000)
    with llama_cpp_server("--n_ctx", "512") as (url, model_id):
        base = ["run", "--backend", "openai", "--model", model_id, "--base-url", url, "--tasks", "medqa",
                "--protocol", "generate", "--data-dir", str(data), "--limit", "2", "--quiet",
                "--cache", str(tmp_path / "c.sqlite"), "--max-attempts", "1"]
        assert main([*base, "--output", str(tmp_path / "a")]) == 0
        res = read_record(tmp_path / "a").tasks["medqa|generate|0shot"]
        assert res.extra["unscored"] == {"prompt exceeds context": 1} and "request_failed" not in res.extra
        assert main([*base, "--model-args", "context_length=512", "--output", str(tmp_path / "b")]) == 0
    lines = [json.loads(x) for x in (tmp_path / "b/samples.jsonl").read_text().splitlines()]
    (long,) = [x for x in lines if x["score"]["value"] is None]
    assert long["score"]["metadata"] == {"context_exceeded": True}
    n, limit = long["score"]["explanation"].removeprefix("prompt exceeds context: ").split(" tokens > ")
    assert int(n) > 3000 and int(limit) < 512  # the room left for the answer's max_tokens
    assert "1 unscored: prompt exceeds context" in capsys.readouterr().out


def test_a_limit_run_is_marked_as_a_subset_and_not_comparable_with_the_full_run(tmp_path):
    full = Runner(RunConfig(tasks=("medqa",), data_source="bundled", output=tmp_path / "full", cache=None),
                  backend=ScriptedBackend()).run().tasks[KEY]
    sub = Runner(RunConfig(tasks=("medqa",), data_source="bundled", limit=10, output=tmp_path / "sub", cache=None),
                 backend=ScriptedBackend()).run().tasks[KEY]
    assert sub.extra["selection"] == {"limit": 10, "of": 50} and "selection" not in full.extra
    assert sub.task_fingerprint != full.task_fingerprint and sub.n_samples == 10
