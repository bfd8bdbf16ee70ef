import json

import pytest

from harness.errors import CapabilityError, HarnessError
from harness.run.config import RunConfig
from harness.run.records import read_record
from harness.run.runner import Runner
from harness.types import RequestKind
from tests.conftest import ScriptedBackend


def config(tmp_path, **kw):
    base = dict(tasks=("medqa", "pubmedqa"), data_source="bundled", output=tmp_path / "run",
                cache=tmp_path / "cache.sqlite")
    base.update(kw)
    return RunConfig(**base)


def without_durations(record):
    out = {}
    for key, res in record.tasks.items():
        data = res.model_dump()
        data.pop("duration_s")
        out[key] = data
    return out


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_run_writes_record_and_samples(tmp_path, scripted):
    record = Runner(config(tmp_path), backend=scripted, chunk_size=7).run()
    assert record.status == "finished"
    res = record.tasks["medqa|loglik|0shot"]
    acc = res.metrics["accuracy"]
    assert acc["n_scored"] == 50 and acc["n_unscored"] == 0
    assert acc["ci"][0] <= acc["value"] <= acc["ci"][1]
    entries = lines(tmp_path / "run/samples.jsonl")
    assert len(entries) == 100
    medqa = [e for e in entries if e["task_key"] == "medqa|loglik|0shot"]
    assert sum(e["score"]["value"] for e in medqa) / 50 == pytest.approx(acc["value"])
    # predictions follow the scripted log-likelihoods
    for e in medqa:
        lps = e["score"]["metadata"]["logprobs"]
        assert e["score"]["metadata"]["pred_index"] == lps.index(max(lps))
    assert read_record(tmp_path / "run") == record
    assert len(scripted.loglik_calls) == 50 * 4 + 50 * 3


def test_rerun_of_finished_run_recomputes_nothing(tmp_path):
    first = ScriptedBackend()
    r1 = Runner(config(tmp_path, cache=None), backend=first).run()
    second = ScriptedBackend()
    r2 = Runner(config(tmp_path, cache=None), backend=second).run()
    assert second.loglik_calls == []
    assert without_durations(r1) == without_durations(r2) and r1.run_id == r2.run_id


def test_resume_after_failure_scores_only_the_rest(tmp_path):
    class Dying(ScriptedBackend):
        def loglikelihood(self, requests):
            if len(self.loglik_calls) >= 40:
                raise RuntimeError("simulated crash")
            return super().loglikelihood(requests)

    with pytest.raises(RuntimeError):
        Runner(config(tmp_path, cache=None), backend=Dying(), chunk_size=5).run()
    partial = read_record(tmp_path / "run")
    assert partial.status == "failed"
    done_before = {(e["task_key"], e["sample_id"]) for e in lines(tmp_path / "run/samples.jsonl")}
    assert 0 < len(done_before) < 100
    resumed = ScriptedBackend()
    record = Runner(config(tmp_path, cache=None), backend=resumed, chunk_size=5).run()
    assert len(resumed.loglik_calls) == (50 - len(done_before)) * 4 + 50 * 3
    entries = lines(tmp_path / "run/samples.jsonl")
    assert len({(e["task_key"], e["sample_id"]) for e in entries}) == len(entries) == 100
    clean = Runner(config(tmp_path / "clean", cache=None), backend=ScriptedBackend()).run()
    assert without_durations(record) == without_durations(clean)


def test_torn_last_line_is_dropped_and_rescored(tmp_path):
    Runner(config(tmp_path, tasks=("medqa",), cache=None), backend=ScriptedBackend()).run()
    path = tmp_path / "run/samples.jsonl"
    data = path.read_text().splitlines(keepends=True)
    path.write_text("".join(data[:-1]) + data[-1][:25])
    backend = ScriptedBackend()
    record = Runner(config(tmp_path, tasks=("medqa",), cache=None), backend=backend).run()
    assert len(backend.loglik_calls) == 4
    assert len(lines(path)) == 50 and record.status == "finished"


def test_cache_serves_a_fresh_output_folder(tmp_path):
    Runner(config(tmp_path, tasks=("medqa",)), backend=ScriptedBackend()).run()
    backend = ScriptedBackend()
    record = Runner(config(tmp_path, tasks=("medqa",), output=tmp_path / "again"), backend=backend).run()
    assert backend.loglik_calls == []
    assert record.cache["hits"] == 200 and record.cache["misses"] == 0


def test_changed_settings_refuse_to_resume(tmp_path, scripted):
    Runner(config(tmp_path, tasks=("medqa",)), backend=scripted).run()
    with pytest.raises(HarnessError, match=r"different settings \(num_fewshot\)"):
        Runner(config(tmp_path, tasks=("medqa",), num_fewshot=2), backend=scripted).run()


def test_capability_error_before_any_work(tmp_path):
    backend = ScriptedBackend(capabilities=[RequestKind.LOGLIKELIHOOD])
    with pytest.raises(CapabilityError, match=r"cannot serve generate requests needed by task 'medqa'"):
        Runner(config(tmp_path, protocol="generate"), backend=backend).run()
    assert backend.loglik_calls == [] and not (tmp_path / "run/samples.jsonl").exists()


def test_generate_protocol_counts_extraction_failures_as_unscored(tmp_path):
    replies = iter(["The answer is (B).", "I am not sure."] * 100)
    backend = ScriptedBackend(reply=lambda req: next(replies))
    record = Runner(config(tmp_path, tasks=("medqa",), protocol="generate"), backend=backend).run()
    acc = record.tasks["medqa|generate|0shot"].metrics["accuracy"]
    assert acc["n_scored"] == 25 and acc["n_unscored"] == 25
    msgs = backend.generate_calls[0].messages
    assert msgs[0].role == "user" and "Answer with the letter" in msgs[0].content


def test_fewshot_prompts_and_record(tmp_path, scripted):
    record = Runner(config(tmp_path, tasks=("mmlu_anatomy",), num_fewshot=3, seed=7), backend=scripted).run()
    res = record.tasks["mmlu_anatomy|loglik|3shot"]
    assert res.n_shot == 3 and res.fewshot_seed == 7
    prompt = lines(tmp_path / "run/samples.jsonl")[0]["prompt"]
    assert prompt.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert prompt.count("\nAnswer:") == 4


def test_group_micro_average(tmp_path, scripted):
    record = Runner(config(tmp_path, tasks=(), suite="quick"), backend=scripted).run()
    group = record.groups["mmlu_medical"]
    members = [record.tasks[k] for k in group["tasks"]]
    n = sum(t.metrics["accuracy"]["n_scored"] for t in members)
    mean = sum(t.metrics["accuracy"]["value"] * t.metrics["accuracy"]["n_scored"] for t in members) / n
    assert group["metrics"]["accuracy"]["value"] == pytest.approx(mean) and n == 120


def test_task_fingerprint_tracks_prompt_and_data(tmp_path, scripted):
    a = Runner(config(tmp_path, tasks=("medqa",)), backend=scripted).run().tasks["medqa|loglik|0shot"]
    b = Runner(config(tmp_path, tasks=("medqa",), limit=10, output=tmp_path / "b"),
               backend=scripted).run().tasks["medqa|loglik|0shot"]
    c = Runner(config(tmp_path, tasks=("medqa",), output=tmp_path / "c"),
               backend=scripted).run().tasks["medqa|loglik|0shot"]
    assert a.task_fingerprint != b.task_fingerprint
    assert a.task_fingerprint == c.task_fingerprint


def test_shards_merge_into_the_unsharded_record(tmp_path):
    from harness.run.merge import merge_runs

    whole = Runner(config(tmp_path, suite="quick", tasks=(), cache=None), backend=ScriptedBackend()).run()
    shard_dirs = []
    for i in range(3):
        out = tmp_path / f"shard{i}"
        backend = ScriptedBackend()
        rec = Runner(config(tmp_path, suite="quick", tasks=(), cache=None, output=out, shard=f"{i}/3"),
                     backend=backend).run()
        assert rec.tasks["medqa|loglik|0shot"].n_samples in (16, 17)
        shard_dirs.append(out)
    merged = merge_runs(shard_dirs[::-1], tmp_path / "merged")
    assert without_durations(merged) == without_durations(whole)
    assert merged.groups == whole.groups
    merged_lines = lines(tmp_path / "merged/samples.jsonl")
    assert sorted((e["task_key"], e["sample_id"]) for e in merged_lines) == sorted(
        (e["task_key"], e["sample_id"]) for e in lines(tmp_path / "run/samples.jsonl"))


def test_merge_refuses_incomplete_or_mismatched_shards(tmp_path):
    from harness.run.merge import merge_runs

    a = tmp_path / "a"
    Runner(config(tmp_path, tasks=("medqa",), cache=None, output=a, shard="0/2"), backend=ScriptedBackend()).run()
    with pytest.raises(HarnessError, match=r"shards must be exactly 0/2 .. 1/2"):
        merge_runs([a], tmp_path / "m")
    b = tmp_path / "b"
    Runner(config(tmp_path, tasks=("medqa",), cache=None, output=b, shard="1/2", seed=5),
           backend=ScriptedBackend()).run()
    with pytest.raises(HarnessError, match="settings differ"):
        merge_runs([a, b], tmp_path / "m")


def test_failed_requests_are_unscored_and_retried_on_resume(tmp_path):
    from harness.types import RequestFailure

    class Flaky(ScriptedBackend):
        def loglikelihood(self, requests):
            out = super().loglikelihood(requests)
            return [RequestFailure("HTTP 500", retryable=False) if "Question: A" in r.context[:11] else o
                    for r, o in zip(requests, out, strict=True)]

    record = Runner(config(tmp_path, tasks=("medqa",)), backend=Flaky()).run()
    acc = record.tasks["medqa|loglik|0shot"].metrics["accuracy"]
    failed = [e for e in lines(tmp_path / "run/samples.jsonl") if e["score"]["value"] is None]
    assert acc["n_unscored"] == len(failed) > 0
    assert all(e["score"]["explanation"] == "request failed: HTTP 500" for e in failed)
    healthy = ScriptedBackend()
    record = Runner(config(tmp_path, tasks=("medqa",)), backend=healthy).run()
    assert len(healthy.loglik_calls) == 4 * len(failed)  # only the failed samples, nothing cached
    assert record.tasks["medqa|loglik|0shot"].metrics["accuracy"]["n_unscored"] == 0


def test_resume_refuses_changed_weights(tmp_path):
    Runner(config(tmp_path, tasks=("medqa",), limit=3), backend=ScriptedBackend()).run()

    class Retrained(ScriptedBackend):
        def fingerprint(self):
            return "scripted-v2"

    with pytest.raises(HarnessError, match="other model weights"):
        Runner(config(tmp_path, tasks=("medqa",), limit=3), backend=Retrained()).run()
