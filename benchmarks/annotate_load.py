"""Load on the annotation app: N simulated annotators (threads, each its own HTTP client and
session) sign in through their one-time links and submit labels concurrently over HTTP on
loopback to a real uvicorn server (its own process) on a SQLite store. Prints the latency of
item pages and label submissions (median, p95, max) and checks that every label was stored.

    python benchmarks/annotate_load.py [--annotators 20] [--labels 1000] [--store PATH]

The runs are synthetic (pairwise campaign over two generated run folders): this measures the
app and the store, not a model. Traffic goes to 127.0.0.1 only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_run(folder: Path, n: int, model_fp: str, seed: str) -> Path:
    from harness.run.records import ModelInfo, RunRecord, TaskResult

    folder.mkdir(parents=True, exist_ok=True)
    key = "mts_dialog_turn|generate_text|0shot"
    lines = []
    for k in range(n):
        prompt = [{"role": "assistant", "content": f"What brings you in today? ({k})"},
                  {"role": "user", "content": f"I have had a cough and fever for {k % 9 + 1} days."}]
        out = f"[{seed}] " + " ".join(["Rest, drink fluids and see a doctor if it gets worse."] * (1 + k % 4))
        lines.append({"task_key": key, "sample_id": f"s-{k}", "index": k, "target": "ref", "prompt": prompt,
                      "score": {"value": 0.1, "answer": out, "explanation": None,
                                "metadata": {"output": out, "references": ["ref"]}}})
    tasks = {key: TaskResult(task="mts_dialog_turn", task_version=1, protocol="generate_text", n_shot=0,
                             fewshot_seed=None, split="test", data_source="bundled", data_fingerprint="d",
                             prompt_hash="p", scorer="s", task_fingerprint="bench", n_samples=n,
                             metrics={"rougeL": {"value": 0.1, "n_scored": n}}, main_metric="rougeL")}
    RunRecord(run_id=f"bench-{seed}", status="finished", created_at="2026-01-01T00:00:00+00:00",
              finished_at="2026-01-01T00:00:00+00:00", harness_version="0.1.0", git_commit=None,
              model=ModelInfo(name=f"bench-{seed}", backend="hf", fingerprint=model_fp), config={}, environment={},
              tasks=tasks).write(folder)
    (folder / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    if m is None:
        raise RuntimeError("no CSRF field on the page")
    return m.group(1)


def annotator(base: str, token: str, n_items: int, gets: list[float], posts: list[float], errors: list[str],
              deadline: float) -> None:
    import httpx

    with httpx.Client(base_url=base, timeout=60.0) as client:
        try:
            page = client.get(f"/signin/{token}")
            client.post("/signin", data={"csrf": csrf_of(page.text), "token": token})
            for pos in range(1, n_items + 1):
                if time.monotonic() > deadline:
                    errors.append("deadline")
                    return
                t0 = time.perf_counter()
                page = client.get(f"/c/load/i/{pos}")
                gets.append(time.perf_counter() - t0)
                if page.status_code != 200:
                    errors.append(f"GET {pos}: {page.status_code}")
                    continue
                choice = "ABtie"[pos % 3] if pos % 3 < 2 else "tie"
                t0 = time.perf_counter()
                shown = re.search(r'name="shown" value="([^"]*)"', page.text)
                r = client.post(f"/c/load/i/{pos}", data={"csrf": csrf_of(page.text), "cmp:overall": choice,
                                                          "comment": f"reason {pos}",
                                                          "shown": shown.group(1) if shown else ""})
                posts.append(time.perf_counter() - t0)
                if r.status_code != 303:
                    errors.append(f"POST {pos}: {r.status_code}")
        except Exception as exc:  # a failed annotator is counted, the others go on
            errors.append(f"{type(exc).__name__}: {exc}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--annotators", type=int, default=20)
    ap.add_argument("--labels", type=int, default=1000, help="labels in all (divided among the annotators)")
    ap.add_argument("--store", type=Path, help="SQLite file (default: a temporary one)")
    ap.add_argument("--timeout", type=float, default=600, help="stop after this many seconds")
    args = ap.parse_args(argv)

    from judges.human.annotations import AnnotationStore, create_campaign
    from judges.human.campaigns import make_spec

    per = -(-args.labels // args.annotators)
    tmp = Path(tempfile.mkdtemp(prefix="annotate-load-"))
    store = args.store or tmp / "store.sqlite"
    runs = [make_run(tmp / "a", per, "bench-a", "a"), make_run(tmp / "b", per, "bench-b", "b")]
    with AnnotationStore(store) as db:
        create_campaign(db, make_spec("load", runs, "pairwise", per_item=args.annotators))
        tokens = [db.invite(f"annotator-{k}", "expert")[1] for k in range(args.annotators)]
    port = free_port()
    code = f"from judges.human.server import serve; serve({str(store)!r}, port={port})"
    server = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(300):
            try:
                if httpx.get(base + "/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        gets: list[float] = []
        posts: list[float] = []
        errors: list[str] = []
        deadline = time.monotonic() + args.timeout
        threads = [threading.Thread(target=annotator, args=(base, t, per, gets, posts, errors, deadline))
                   for t in tokens]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=args.timeout + 60)
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(timeout=30)
    with AnnotationStore(store) as db:
        stored = db.labels(db.campaign("load"))
    rows: list[tuple[str, int, float, float, float]] = []
    for name, vals in (("GET item page", gets), ("POST label", posts)):
        if vals:
            rows.append((name, len(vals), 1000 * statistics.median(vals), 1000 * pct(vals, 0.95), 1000 * max(vals)))
    print(f"{args.annotators} concurrent annotators, {per} items each, loopback HTTP to uvicorn (1 process), "
          f"SQLite store; wall {wall:.1f} s, {len(posts) / wall:.1f} labels/s")
    print(f"{'request':<16} {'n':>6} {'median ms':>10} {'p95 ms':>10} {'max ms':>10}")
    for name, n, med, p95, mx in rows:
        print(f"{name:<16} {n:>6} {med:>10.1f} {p95:>10.1f} {mx:>10.1f}")
    print(f"labels stored: {len(stored)} of {len(posts)} submitted; errors: {len(errors)}"
          + (f" (first: {errors[0]})" if errors else ""))
    return 0 if len(stored) == len(posts) == per * args.annotators and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
