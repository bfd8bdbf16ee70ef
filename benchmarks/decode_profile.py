#!/usr/bin/env python
"""Benchmark: where the hf backend's generation time goes, for the prompts of
generation_vs_lmeval.py (MedQA `cot` prompts or MTS-Dialog doctor turns). Run on demand (not in
CI).

The prompts go straight to the hf backend's `generate` (its decode loop,
harness.backends.hf_generate), as `harness run` builds the backend (default model, float32, packed linear weights unless
`--no-packed`), greedy, batch 8, one thread. Every forward pass is timed and filed as prefill or
as a decode step of its rows x tokens per row; the loop's own work is the rest.

    python benchmarks/decode_profile.py --dataset mts_turn --n 50
    python benchmarks/decode_profile.py --dataset medqa_cot --n 50 --no-packed
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation_vs_lmeval import DEFAULT_DATA, plan_prompts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mts_turn", choices=("mts_turn", "medqa_cot"))
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-packed", action="store_true", help="torch's own linear kernels (packed_linear=false)")
    p.add_argument("--sc", type=int, default=0, help="sample this many chains per prompt (temperature 0.7, "
                   "seeds SEED..SEED+K-1, as sc@K) instead of one greedy chain")
    p.add_argument("--seed", type=int, default=1234, help="the first chain's seed (harness run's default --seed)")
    p.add_argument("--prompt-lookup", type=int, default=10, help="draft tokens at most (0: no drafts)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from harness.backends.hf import HFBackend
    from harness.types import GenerationConfig, GenerationRequest

    _, prompts, max_tokens = plan_prompts(args.dataset, args.n, args.data_dir)
    backend = HFBackend(None, dtype="float32", batch_size=args.batch_size, packed_linear=not args.no_packed,
                        prompt_lookup=args.prompt_lookup)
    model = backend.model
    if args.sc:
        requests = [GenerationRequest(prompt=text, config=GenerationConfig(
            max_tokens=max_tokens, temperature=0.7, seed=args.seed + j)) for text in prompts for j in range(args.sc)]
    else:
        config = GenerationConfig(max_tokens=max_tokens, temperature=0.0)
        requests = [GenerationRequest(prompt=text, config=config) for text in prompts]
    spent: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter[str] = collections.Counter()
    forward = model.forward

    def timed(*a, **kw):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = forward(*a, **kw)
        rows, width = kw["input_ids"].shape
        key = "prefill" if kw.get("logits_to_keep") == 1 else f"decode {rows} x {width}"
        spent[key] += time.perf_counter() - t
        calls[key] += 1
        return out

    model.forward = timed
    t0 = time.perf_counter()
    results = backend.generate(requests)  # packing (at the first request) is counted as loop work
    wall = time.perf_counter() - t0
    model_s = sum(spent.values())
    print(f"{args.dataset}: {len(results)} prompts, {sum(r.n_prompt_tokens for r in results)} prompt tokens, "
          f"{sum(r.n_completion_tokens for r in results)} generated; packed layers {backend.packed_linear}; "
          f"stats {backend.last_generation_stats}\n")
    lengths = sorted(r.n_completion_tokens for r in results)
    print(f"generated tokens per chain: median {lengths[len(lengths) // 2]}, max {lengths[-1]}, "
          f"at max_tokens {sum(n >= max_tokens for n in lengths)}\n")
    print("| part | calls | s | ms per call | share |")
    print("|---|---|---|---|---|")
    for key, sec in sorted(spent.items(), key=lambda kv: -kv[1])[:12]:
        print(f"| {key} | {calls[key]} | {sec:.2f} | {1000 * sec / calls[key]:.1f} | {sec / wall:.0%} |")
    print(f"| the loop's own work | | {wall - model_s:.2f} | | {(wall - model_s) / wall:.0%} |")
    print(f"| all | | {wall:.2f} | | 100% |")


if __name__ == "__main__":
    main()
