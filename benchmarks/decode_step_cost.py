#!/usr/bin/env python
"""Benchmark: the time of one decode step of the default model by rows and tokens per row (the
source of harness.backends.prompt_lookup.step_cost). Run on demand (not in CI).

Each case prefills `--context` random tokens per row into the hf backend's buffer cache, then
times `--steps` decode steps that feed every row `width` tokens (1 = a plain step; more = a
row's last token plus width - 1 draft tokens), best of the steps after two warm-up steps, with
torch's own linear kernels and with the oneDNN-packed weights the hf backend uses on a CPU for
calls of cpu_linear.PACKED_ROWS rows (4-32, 2-32 without AVX-512; `--model-args packed_linear=false` turns them off).

    python benchmarks/decode_step_cost.py                 # float32, 1 thread
    python benchmarks/decode_step_cost.py --threads 2 --context 1000
"""

from __future__ import annotations

import argparse
import time

import torch

CASES = ((1, 1), (1, 2), (1, 4), (1, 11), (2, 1), (2, 6), (3, 1), (3, 5), (4, 1), (4, 4), (6, 1), (8, 1), (8, 2),
         (12, 1), (16, 1), (8, 3), (8, 4))


def step_ms(model: torch.nn.Module, rows: int, width: int, context: int, steps: int) -> float:
    from harness.backends.kv_cache import BufferCache

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 1000, (rows, context), generator=gen)
    mask = torch.ones(rows, context, dtype=torch.long)
    out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1, cache=BufferCache(64))
    cache = out.past_key_values if getattr(out, "past_key_values", None) is not None else out.cache
    pos = torch.full((rows, 1), context)
    step = torch.randint(0, 1000, (rows, width), generator=gen)
    times = []
    for i in range(steps + 2):
        mask = torch.cat([mask, mask.new_ones(rows, width)], dim=1)
        t = time.perf_counter()
        model(input_ids=step, attention_mask=mask, position_ids=pos + torch.arange(width), cache=cache,
              use_cache=True)
        if i >= 2:
            times.append(time.perf_counter() - t)
        pos = pos + width
    return 1000 * min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--context", type=int, default=250, help="prompt tokens per row (default 250)")
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    from harness.backends.cpu_linear import pack_linears
    from harness.backends.models import default_model_dir
    from harness.backends.prompt_lookup import step_cost

    plain = AutoModelForCausalLM.from_pretrained(str(default_model_dir()), dtype=torch.float32).eval()
    packed = AutoModelForCausalLM.from_pretrained(str(default_model_dir()), dtype=torch.float32).eval()
    if not pack_linears(packed):
        raise SystemExit("oneDNN linear layers are not available in this torch build")
    print(f"float32, {args.threads} thread(s), {args.context}-token context, best of {args.steps} steps\n")
    print("| rows | tokens per row | torch kernels ms | packed ms | packed x torch | "
          "packed x a one-row step | step_cost model (packed) |")
    print("|---|---|---|---|---|---|---|")
    with torch.inference_mode():
        base = step_ms(packed, 1, 1, args.context, args.steps)
        for rows, width in CASES:
            ms = base if (rows, width) == (1, 1) else step_ms(packed, rows, width, args.context, args.steps)
            torch_ms = step_ms(plain, rows, width, args.context, args.steps)
            print(f"| {rows} | {width} | {torch_ms:.1f} | {ms:.1f} | {ms / torch_ms:.2f} | {ms / base:.2f} | "
                  f"{step_cost(rows * width, packed=True):.2f} |")


if __name__ == "__main__":
    main()
