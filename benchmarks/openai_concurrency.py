#!/usr/bin/env python
"""Throughput of the openai backend at concurrency 1 vs 16 against a local OpenAI-compatible
server (llama.cpp's by default, serving the default model's GGUF; or --base-url for any).

    python benchmarks/openai_concurrency.py [--requests 200] [--max-tokens 16]
             [--base-url http://127.0.0.1:8000/v1 --model NAME]

Prints requests/s per concurrency, the throughput ratio, and p50/p95 latency per request.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any


def start_llama_server(n_parallel: int) -> tuple[subprocess.Popen[bytes], str, str]:
    from harness.backends.models import gguf_path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "4096"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        try:
            with urllib.request.urlopen(url + "/models", timeout=2) as resp:
                return proc, url, json.loads(resp.read())["data"][0]["id"]
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("llama.cpp server did not start")


def measure(base_url: str, model: str, n: int, concurrency: int, max_tokens: int) -> dict[str, Any]:
    from harness.backends.openai_api import OpenAIBackend
    from harness.types import GenerationConfig, GenerationRequest, Message

    backend = OpenAIBackend(model, base_url=base_url, concurrency=concurrency, timeout=600)
    latencies: list[float] = []
    inner = backend._generate_one

    async def timed(req: GenerationRequest) -> Any:
        t0 = time.perf_counter()
        out = await inner(req)
        latencies.append(time.perf_counter() - t0)
        return out

    backend._generate_one = timed  # type: ignore[method-assign]
    reqs = [GenerationRequest(messages=(Message("user", f"Question {i}: name one symptom of anaemia."),),
                              config=GenerationConfig(max_tokens=max_tokens)) for i in range(n)]
    t0 = time.perf_counter()
    outs = backend.generate(reqs)
    wall = time.perf_counter() - t0
    failures = sum(not hasattr(o, "text") for o in outs)
    q = statistics.quantiles(latencies, n=100)
    return {"concurrency": concurrency, "requests": n, "failures": failures, "wall_s": wall,
            "req_per_s": n / wall, "p50_s": statistics.median(latencies), "p95_s": q[94]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    args = parser.parse_args()
    proc = None
    if args.base_url:
        url, model = args.base_url, args.model or "default"
    else:
        proc, url, model = start_llama_server(16)
    try:
        rows = [measure(url, model, args.requests, c, args.max_tokens) for c in (1, 16)]
    finally:
        if proc is not None:
            proc.terminate()
    print(f"server: {url} model: {model}; {args.requests} chat requests, max_tokens={args.max_tokens}")
    print(f"{'concurrency':>11}  {'wall s':>7}  {'req/s':>6}  {'p50 s':>6}  {'p95 s':>6}  failures")
    for r in rows:
        print(f"{r['concurrency']:>11}  {r['wall_s']:7.1f}  {r['req_per_s']:6.2f}  {r['p50_s']:6.2f}  "
              f"{r['p95_s']:6.2f}  {r['failures']}")
    print(f"throughput ratio (16 / 1): {rows[1]['req_per_s'] / rows[0]['req_per_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
