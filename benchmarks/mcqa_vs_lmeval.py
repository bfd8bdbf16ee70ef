#!/usr/bin/env python
"""Benchmark: our `loglik` MCQA scoring vs lm-eval 0.4.13's built-in tasks, same model, same
data, same batch size. Run on demand (not in CI); see benchmarks/README.md.

Each run is a FRESH subprocess (`harness run ...` / `python -m lm_eval run ...`), so start-up,
model load and peak RSS count honestly; runs alternate ours, lm-eval, ours, ... per dataset.
Wall time is measured around the subprocess, peak RSS and CPU time come from os.wait4().
Our request cache is disabled. Both sides read the same first-N samples of the local data
(lm-eval through task YAMLs written by tests/lmeval_local.py, which `include:` its built-ins).

    python benchmarks/mcqa_vs_lmeval.py --limit 40 --markdown /tmp/bench.md
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
FULL_SIZE = {"medqa": 1273, "medmcqa": 4183, "pubmedqa": 500}


def _load_helper() -> Any:
    spec = importlib.util.spec_from_file_location("_lmeval_local", ROOT / "tests" / "lmeval_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Run:
    dataset: str
    system: str  # "ours" | "lm-eval"
    round: int
    questions: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    accuracy: float | None = None
    reported_accuracy: float | None = None
    preds: list[int] = field(default_factory=list)
    logliks: list[list[float]] = field(default_factory=list)
    ok: bool = True
    error: str = ""

    @property
    def qps(self) -> float:
        return self.questions / self.wall_s if self.wall_s else 0.0


def run_measured(cmd: list[str], log_path: Path, env: dict[str, str]) -> tuple[int, float, float, float]:
    """Run cmd in a fresh process; return (exit code, wall s, user+sys s, peak RSS MB)."""
    with log_path.open("w", encoding="utf-8") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped by wait4
    # Linux: ru_maxrss in KiB (macOS: bytes).
    rss_mb = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return proc.returncode, wall, usage.ru_utime + usage.ru_stime, rss_mb


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


def _loglik(resp: Any) -> float:
    """lm-eval's logged (loglik, is_greedy) for one choice, possibly nested / stringified."""
    while isinstance(resp, (list, tuple)) and resp and isinstance(resp[0], (list, tuple)):
        resp = resp[0]
    if isinstance(resp, (list, tuple)):
        return float(resp[0])
    if isinstance(resp, str):
        return float(resp.strip("()[] ").split(",")[0])
    return float(resp)


def run_ours(args: argparse.Namespace, ds: str, rnd: int, work: Path, env: dict[str, str],
             samples: list[Any]) -> Run:
    out = work / f"ours-{ds}-r{rnd}"
    cmd = [sys.executable, "-c", "import sys; from harness.cli.app import main; sys.exit(main())",
           "run", "--model", str(args.model), "--tasks", ds, "--protocol", "loglik",
           "--data-source", "local", "--data-dir", str(args.data_dir), "--no-cache", "--quiet",
           "--batch-size", str(args.batch_size), "--output", str(out), "--threads", str(args.threads)]
    if args.limit is not None:
        cmd += ["--limit", str(args.limit)]
    if args.ours_model_args:
        cmd += ["--model-args", args.ours_model_args]
    run = Run(ds, "ours", rnd)
    rc, run.wall_s, run.cpu_s, run.peak_rss_mb = run_measured(cmd, work / f"ours-{ds}-r{rnd}.log", env)
    if rc != 0:
        run.ok, run.error = False, f"exit {rc}, see {work / f'ours-{ds}-r{rnd}.log'}"
        return run
    entries = {}
    for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        entries[e["sample_id"]] = e
    for s in samples:
        meta = entries[s.id]["score"]["metadata"]
        run.preds.append(int(meta["pred_index"]))
        run.logliks.append([float(x) for x in meta["logprobs"]])
    run.questions = len(run.preds)
    run.accuracy = sum(p == s.target for p, s in zip(run.preds, samples, strict=True)) / run.questions
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    for key, task in record["tasks"].items():
        if key.split("|", 1)[0] == ds:
            run.reported_accuracy = task["metrics"]["accuracy"]["value"]
    return run


def run_lmeval(args: argparse.Namespace, ds: str, rnd: int, work: Path, env: dict[str, str],
               local: Any, device: str) -> Run:
    out = work / f"lmeval-{ds}-r{rnd}"
    task = local.tasks[ds]
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "hf",
           "--model_args", f"pretrained={args.model},dtype=float32", "--device", device,
           "--tasks", task, "--include_path", str(local.folder),
           "--batch_size", str(args.batch_size), "--log_samples", "--output_path", str(out)]
    run = Run(ds, "lm-eval", rnd)
    log = work / f"lmeval-{ds}-r{rnd}.log"
    rc, run.wall_s, run.cpu_s, run.peak_rss_mb = run_measured(cmd, log, env)
    if rc != 0:
        run.ok, run.error = False, f"exit {rc}, see {log}"
        return run
    sample_files = sorted(out.rglob(f"samples_{task}_*.jsonl"))
    result_files = sorted(out.rglob("results_*.json"))
    if not sample_files or not result_files:
        run.ok, run.error = False, f"no samples/results file under {out}"
        return run
    logged = [json.loads(line) for line in sample_files[-1].read_text(encoding="utf-8").splitlines()
              if line.strip()]
    logged.sort(key=lambda e: int(e["doc_id"]))
    samples = local.samples[ds]
    if [e["doc"]["id"] for e in logged] != [s.id for s in samples]:
        run.ok, run.error = False, "lm-eval's docs are not our samples (order or ids differ)"
        return run
    for e in logged:
        lls = [_loglik(r) for r in e["filtered_resps"]]
        run.logliks.append(lls)
        run.preds.append(_argmax(lls))
    run.questions = len(run.preds)
    run.accuracy = sum(p == s.target for p, s in zip(run.preds, samples, strict=True)) / run.questions
    results = json.loads(result_files[-1].read_text(encoding="utf-8"))
    run.reported_accuracy = results["results"][task].get("acc,none")
    return run


def machine_info(device: str) -> list[tuple[str, str]]:
    from importlib.metadata import version

    import torch
    import transformers

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu_model = platform.processor()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        ("cpu", f"{cpu_model or '?'}; os.cpu_count()={os.cpu_count()}, usable={affinity}"),
        ("torch threads", f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op"),
        ("device", device + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else "")),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("transformers", transformers.__version__),
        ("lm-eval", version("lm_eval")),
        ("medllm-harness", version("medllm-harness")),
        ("platform", platform.platform()),
    ]


def _fmt_acc(run: Run) -> str:
    return "-" if run.accuracy is None else f"{run.accuracy:.4f}"


def build_report(runs: list[Run], datasets: list[str], info: list[tuple[str, str]],
                 load_before: tuple[float, ...], load_after: tuple[float, ...],
                 args: argparse.Namespace) -> tuple[str, str]:
    """(plain text, markdown)."""
    head = ["dataset", "system", "round", "questions", "wall s", "questions/s", "CPU s",
            "peak RSS MB", "accuracy"]
    rows = []
    for r in runs:
        rows.append([r.dataset, r.system, str(r.round), str(r.questions), f"{r.wall_s:.1f}",
                     f"{r.qps:.2f}", f"{r.cpu_s:.1f}", f"{r.peak_rss_mb:.0f}",
                     _fmt_acc(r) if r.ok else f"FAILED ({r.error})"])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    text = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    text += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    md = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    md += ["| " + " | ".join(row) + " |" for row in rows]

    summary = []
    for ds in datasets:
        ours = [r for r in runs if r.dataset == ds and r.system == "ours" and r.ok]
        theirs = [r for r in runs if r.dataset == ds and r.system == "lm-eval" and r.ok]
        if not ours or not theirs:
            summary.append(f"{ds}: incomplete (a run failed), no comparison")
            continue
        q_ours = statistics.median(r.qps for r in ours)
        q_theirs = statistics.median(r.qps for r in theirs)
        a, b = ours[0], theirs[0]
        disagree = [i for i, (x, y) in enumerate(zip(a.preds, b.preds, strict=True)) if x != y]
        max_diff = max((abs(x - y) for la, lb in zip(a.logliks, b.logliks, strict=True)
                        for x, y in zip(la, lb, strict=True)), default=0.0)
        stable = all(r.preds == a.preds for r in ours) and all(r.preds == b.preds for r in theirs)
        line = (f"{ds}: throughput ours/lm-eval = {q_ours / q_theirs:.2f}x "
                f"(median questions/s {q_ours:.2f} vs {q_theirs:.2f}); predictions: "
                + ("ALL agree" if not disagree else f"{len(disagree)} of {a.questions} DISAGREE "
                   f"(first doc indices {disagree[:10]})")
                + f"; accuracy {a.accuracy:.4f} vs {b.accuracy:.4f}; "
                f"max |delta loglik| {max_diff:.2e}")
        if not stable:
            line += "; WARNING: predictions changed between rounds"
        summary.append(line)

    info_lines = [f"{k}: {v}" for k, v in info]
    info_lines.append(f"load average before/after: {'/'.join(f'{x:.2f}' for x in load_before)} "
                      f"-> {'/'.join(f'{x:.2f}' for x in load_after)}")
    info_lines.append(f"batch size {args.batch_size}, limit {args.limit or 'all'}, rounds "
                      f"{args.rounds}, model {args.model}, our request cache disabled; "
                      "each run a fresh process")
    plain = "\n".join(["machine:", *("  " + x for x in info_lines), "", *text, "", *summary])
    markdown = "\n".join(["# MCQA log-likelihood scoring: medllm-harness vs lm-eval", "",
                          *("- " + x for x in info_lines), "", *md, "",
                          *("- " + x for x in summary), ""])
    return plain, markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help=f"local data folder (default: {DEFAULT_DATA})")
    parser.add_argument("--datasets", default="medqa,pubmedqa",
                        help="comma-separated: medqa, medmcqa, pubmedqa (default: medqa,pubmedqa)")
    parser.add_argument("--limit", type=int, default=None,
                        help="first N questions per dataset (default: all: "
                             + ", ".join(f"{k} {v}" for k, v in FULL_SIZE.items()) + ")")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="CPU threads of both systems (default: the usable cores); fixed, so that "
                             "`harness run`'s load-dependent default cannot differ from lm-eval's")
    parser.add_argument("--rounds", type=int, default=1, help="alternating ours/lm-eval rounds")
    parser.add_argument("--model", type=Path, default=None,
                        help="model folder for both systems (default: the converted default model)")
    parser.add_argument("--ours-model-args", default="",
                        help="extra backend arguments for our side, e.g. dtype=float32")
    parser.add_argument("--markdown", type=Path, help="also write the report as markdown here")
    parser.add_argument("--workdir", type=Path,
                        help="keep run folders and logs here (default: a temporary folder, deleted)")
    args = parser.parse_args(argv)

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in FULL_SIZE]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from {', '.join(FULL_SIZE)}")
    if not args.data_dir.is_dir():
        parser.error(f"data folder not found: {args.data_dir}")
    args.data_dir = args.data_dir.resolve()
    if args.rounds < 1 or args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--rounds, --batch-size and --limit must be >= 1")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))  # lm-eval's torch reads it
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.model is None:
        from harness.backends.models import default_model_dir

        args.model = default_model_dir()
    args.model = Path(args.model).resolve()
    # Warm the page cache so neither side pays the first read of the weights.
    for f in args.model.iterdir():
        if f.is_file():
            with f.open("rb") as fh:
                while fh.read(1 << 24):
                    pass

    helper = _load_helper()
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="mcqa_vs_lmeval-")
        work = Path(tmp.name)
    else:
        work = args.workdir.resolve()
        work.mkdir(parents=True, exist_ok=True)
    try:
        local = helper.write_local_tasks(args.data_dir, work / "lmeval_tasks", datasets, args.limit)
        helper.check_prompts(local, n=5)
        info = [*machine_info(device), ("threads of both systems", str(args.threads))]
        load_before = os.getloadavg()
        runs: list[Run] = []
        for ds in datasets:
            for rnd in range(1, args.rounds + 1):
                for system in ("ours", "lm-eval"):
                    print(f"[{ds} round {rnd}] {system} ...", end=" ", flush=True)
                    if system == "ours":
                        run = run_ours(args, ds, rnd, work, env, local.samples[ds])
                    else:
                        run = run_lmeval(args, ds, rnd, work, env, local, device)
                    runs.append(run)
                    print(f"{run.wall_s:.1f} s" + ("" if run.ok else f" FAILED: {run.error}"),
                          flush=True)
                    if run.ok and run.reported_accuracy is not None and run.accuracy is not None \
                            and abs(run.reported_accuracy - run.accuracy) > 1e-9:
                        print(f"  note: {system} reports accuracy {run.reported_accuracy}, "
                              f"its predictions give {run.accuracy}")
        load_after = os.getloadavg()
        plain, markdown = build_report(runs, datasets, info, load_before, load_after, args)
        print()
        print(plain)
        if args.markdown:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            args.markdown.write_text(markdown, encoding="utf-8")
            print(f"\nmarkdown: {args.markdown}")
        return 0 if all(r.ok for r in runs) else 1
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
