"""The vLLM backend's two log-likelihood paths side by side, on one engine, in one run.

`next_token` (one request per question: the shared context's next-token distribution read at the
option tokens; what `loglik_mode=auto` picks when every option is one token) against
`prompt_logprobs` (one request per option with prompt log-probabilities; `loglik_mode=
prompt_logprobs`), on the quick suite's letter-scored (`loglik`) questions. The rounds alternate
the two paths; each round scores every question. Prints requests, engine requests, prompt tokens
sent and served from the prefix cache, seconds, questions/s, the ratio and the agreement.

    python benchmarks/vllm_loglik_paths.py [--rounds 2] [--limit N] [--model DIR] [--dtype float32]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def questions(limit: int | None) -> list[list]:
    from harness.data.sources import load_split
    from harness.data.spec import ProtocolSpec
    from harness.protocols.base import PROTOCOLS, PromptContext
    from harness.protocols.formats import FORMATS
    from harness.run.catalog import load_catalog

    cat = load_catalog()
    out = []
    for task in cat.suites["quick"].tasks:
        spec = cat.task(task)
        ctx = PromptContext(FORMATS.get(spec.format), ProtocolSpec())
        for s in load_split(spec, spec.eval_split, "bundled", None)[:limit]:
            out.append(PROTOCOLS.get("loglik").requests(s, ctx))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--limit", type=int, help="first N questions of each quick-suite task (default: all)")
    parser.add_argument("--model", help="model folder (default: the converted default model)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.2, help="on CPU: the KV cache's RAM share")
    args = parser.parse_args()

    import vllm

    from harness.backends.models import default_model_dir
    from harness.backends.vllm_backend import VLLMBackend

    qs = questions(args.limit)
    flat = [r for q in qs for r in q]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()}; "
          f"vllm {vllm.__version__}; {len(qs)} questions, {len(flat)} option requests")
    backend = VLLMBackend(args.model or str(default_model_dir()), dtype=args.dtype, max_model_len=2048,
                          gpu_memory_utilization=args.gpu_memory_utilization)
    try:
        backend.loglikelihood(flat[:8])  # warm-up (compilation, first allocation)
        rows = []
        results: dict[str, list[float]] = {}
        for rnd in range(args.rounds):
            for mode in ("auto", "prompt_logprobs"):
                backend.loglik_mode = mode
                before = backend.usage()
                started = time.perf_counter()
                res = backend.loglikelihood(flat)
                wall = time.perf_counter() - started
                used = {k: v - before.get(k, 0) for k, v in backend.usage().items()}
                path = "next_token" if mode == "auto" else "prompt_logprobs"
                results[path] = [r.logprob for r in res]
                rows.append((path, rnd, len(flat), used.get(f"loglik_{path}_engine_requests", 0),
                             used.get(f"loglik_{path}_prompt_tokens", 0),
                             used.get(f"loglik_{path}_prompt_tokens_cached", 0), wall, len(qs) / wall))
        backend.loglik_mode = "auto"
    finally:
        backend.close()

    print("| path | round | option requests | engine requests | prompt tokens sent | served from prefix cache "
          "| wall s | questions/s |")
    print("|---|---|---|---|---|---|---|---|")
    for path, rnd, n, engine, sent, cached, wall, qps in rows:
        print(f"| {path} | {rnd} | {n} | {engine} | {sent} | {cached} | {wall:.2f} | {qps:.2f} |")
    median = {p: statistics.median(r[7] for r in rows if r[0] == p) for p in ("next_token", "prompt_logprobs")}
    a, b = results["next_token"], results["prompt_logprobs"]
    same, at = 0, 0
    for q in qs:
        x, y = a[at:at + len(q)], b[at:at + len(q)]
        same += max(range(len(q)), key=x.__getitem__) == max(range(len(q)), key=y.__getitem__)
        at += len(q)
    print(f"throughput next_token / prompt_logprobs: {median['next_token'] / median['prompt_logprobs']:.2f}x "
          f"(median questions/s); same prediction {same}/{len(qs)}; "
          f"max |delta loglik| {max(abs(u - v) for u, v in zip(a, b, strict=True)):.2e}")
    return 0


if __name__ == "__main__":  # vLLM spawns worker processes
    sys.exit(main())
