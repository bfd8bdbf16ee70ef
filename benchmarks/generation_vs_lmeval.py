#!/usr/bin/env python
"""Benchmark: greedy generation through `harness run` (hf backend) vs lm-eval 0.4.13's hf
`generate_until`, same model, dtype, batch size, max tokens and prompts; llama.cpp's server
through our openai backend as a third row; and sc@5 vs one greedy chain, and vs lm-eval's
`repeats: 5` sampling. Run on demand (not in CI); see benchmarks/README.md.

Prompts: MedQA `cot` prompts and MTS-Dialog doctor turns (`mts_dialog_turn`), the first N of
each from the local data. Our prompts are rendered once (the model's chat template) and given to
lm-eval verbatim as `doc_to_text` of a generate_until task whose `until` is the EOS token, so
both sides decode exactly the same token sequences. Every run is a FRESH subprocess (start-up
and model load included), runs alternate ours / lm-eval per dataset; wall time around the
process, peak RSS from os.wait4(). Generated tokens are the outputs re-tokenised with the
model's tokenizer (the same count for both systems). "identical" is the share of outputs equal
to our hf outputs (after stripping surrounding white space, as lm-eval does not).

    nice -n 5 python benchmarks/generation_vs_lmeval.py --n 50 --markdown /tmp/gen.md
    nice -n 5 python benchmarks/generation_vs_lmeval.py --n 8 --sc 4 --no-llama   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DATASETS = {"medqa_cot": ("medqa", "cot"), "mts_turn": ("mts_dialog_turn", None)}


@dataclass
class Row:
    dataset: str
    system: str
    n: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    gen_s: float | None = None
    tokens: int = 0
    rss_mb: float = 0.0
    identical: float | None = None
    ok: bool = True
    note: str = ""

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0

    @property
    def tok_cpu_s(self) -> float:
        return self.tokens / self.cpu_s if self.cpu_s else 0.0


def timed(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[int, float, float, float]:
    with log.open("w") as fh:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env or os.environ.copy(), cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
    cpu = usage.ru_utime + usage.ru_stime
    return os.waitstatus_to_exitcode(status), wall, cpu, usage.ru_maxrss / 1024


def plan_prompts(dataset: str, n: int, data_dir: Path) -> tuple[list[str], list[str], int]:
    """(sample ids, rendered prompts, max_tokens) exactly as `harness run` builds them."""
    from transformers import AutoTokenizer

    from harness.backends.models import default_model_dir
    from harness.backends.tokenize import render_chat
    from harness.run.catalog import load_catalog
    from harness.run.config import RunConfig
    from harness.run.planning import plan_run
    from harness.types import GenerationRequest

    task, protocol = DATASETS[dataset]
    cfg = RunConfig(tasks=(task,), protocol=protocol, limit=n, data_dir=data_dir, data_source="local",
                    output=Path("unused"))
    (plan,) = plan_run(cfg, load_catalog())
    tok = AutoTokenizer.from_pretrained(str(default_model_dir()))
    ids, prompts, max_tokens = [], [], 0
    for s in plan.samples:
        (req,) = plan.requests[s.id]
        assert isinstance(req, GenerationRequest) and req.messages is not None
        assert req.config.temperature == 0
        ids.append(s.id)
        prompts.append(render_chat(tok, [{"role": m.role, "content": m.content} for m in req.messages]))
        max_tokens = req.config.max_tokens
    return ids, prompts, max_tokens


def our_outputs(run_dir: Path) -> tuple[dict[str, str], float]:
    outs, elapsed = {}, 0.0
    for line in (run_dir / "samples.jsonl").read_text().splitlines():
        e = json.loads(line)
        outs[e["sample_id"]] = e["score"]["metadata"].get("output", "")
        elapsed += float(e.get("elapsed_s") or 0.0)
    return outs, elapsed


def run_ours(dataset: str, n: int, args: argparse.Namespace, work: Path, tag: str,
             extra: list[str] | None = None, protocol: str | None = None) -> tuple[Row, dict[str, str]]:
    task, default_protocol = DATASETS[dataset]
    out = work / f"ours-{dataset}-{tag}"
    cmd = [sys.executable, "-m", "harness", "run", "--tasks", task, "--limit", str(n),
           "--data-dir", str(args.data_dir), "--data-source", "local", "--batch-size", str(args.batch_size),
           "--no-cache", "--quiet", "--output", str(out), "--threads", str(args.threads)]
    chosen = protocol or default_protocol
    if chosen:
        cmd += ["--protocol", chosen]
    cmd += extra or ["--model-args", "dtype=float32"]
    rc, wall, cpu, rss = timed(cmd, work / f"ours-{dataset}-{tag}.log")
    row = Row(dataset, tag, n, wall, cpu, rss_mb=rss, ok=rc == 0)
    if rc != 0:
        row.note = f"exit {rc}, see {work / f'ours-{dataset}-{tag}.log'}"
        return row, {}
    outs, row.gen_s = our_outputs(out)
    row.tokens = completion_tokens(out)
    return row, outs


def completion_tokens(run_dir: Path) -> int:
    """The candidate's generated tokens, as the run recorded them (score.metadata.tokens)."""
    total = 0
    for line in (run_dir / "samples.jsonl").read_text().splitlines():
        pair = json.loads(line)["score"]["metadata"].get("tokens", {}).get("candidate")
        total += int(pair[1]) if pair else 0
    return total


def run_lmeval(dataset: str, prompts: list[str], max_tokens: int, args: argparse.Namespace,
               work: Path, eos: str, repeats: int = 1) -> tuple[Row, list[str]]:
    """lm-eval's hf `generate_until` on the prompts: greedy, or with `repeats` > 1 that many
    chains per prompt sampled at temperature 0.7 (`repeats` in the task YAML, as lm-eval's own
    self-consistency tasks do); the outputs, all chains of a prompt in a row."""
    import yaml

    from harness.backends.models import default_model_dir

    tag = dataset if repeats == 1 else f"{dataset}-sc{repeats}"
    tdir = work / f"lmeval-tasks-{tag}"
    tdir.mkdir(exist_ok=True)
    data = tdir / "docs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "target": ""}) + "\n" for p in prompts))
    name = f"genbench_{tag}".replace("-", "_")
    sampling = {"do_sample": False} if repeats == 1 else {"do_sample": True, "temperature": 0.7}
    (tdir / f"{name}.yaml").write_text(yaml.safe_dump({
        "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test", "output_type": "generate_until", "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{target}}", "target_delimiter": "", "repeats": repeats,
        "generation_kwargs": {"until": [eos], "max_gen_toks": max_tokens, **sampling},
        "metric_list": [{"metric": "exact_match"}],
    }))
    out = work / f"lmeval-{tag}"
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
           f"pretrained={default_model_dir()},dtype=float32", "--include_path", str(tdir), "--tasks", name,
           "--batch_size", str(args.batch_size), "--log_samples", "--output_path", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    rc, wall, cpu, rss = timed(cmd, work / f"lmeval-{tag}.log", env)
    row = Row(tag, "lm-eval hf generate_until", len(prompts), wall, cpu, rss_mb=rss, ok=rc == 0)
    files = sorted(out.rglob(f"samples_{name}_*.jsonl"))
    if rc != 0 or not files:
        row.ok, row.note = False, f"exit {rc}, see {work / f'lmeval-{tag}.log'}"
        return row, []
    docs = [json.loads(line) for line in files[-1].read_text().splitlines()]
    docs.sort(key=lambda d: d["doc_id"])
    return row, [text for d in docs for resp in d["resps"] for text in resp]  # resps: [[chain, ...]]


def count_tokens(texts: list[str]) -> int:
    from transformers import AutoTokenizer

    from harness.backends.models import default_model_dir

    tok = AutoTokenizer.from_pretrained(str(default_model_dir()))
    return sum(len(tok.encode(t)) for t in texts)


def same(a: str, b: str) -> bool:
    return a.strip() == b.strip()


def machine() -> list[str]:
    from importlib.metadata import version

    return [f"cpu: {platform.processor() or platform.machine()}, usable cores {len(os.sched_getaffinity(0))}",
            f"torch {version('torch')}, transformers {version('transformers')}, lm-eval {version('lm-eval')}",
            f"load average at start: {os.getloadavg()}"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50, help="prompts per dataset (default 50)")
    p.add_argument("--datasets", default="medqa_cot,mts_turn")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="CPU threads of every system (default 1)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--no-llama", action="store_true", help="skip the llama.cpp server row")
    p.add_argument("--no-lmeval", action="store_true", help="skip the lm-eval row (e.g. with --ablate)")
    p.add_argument("--ablate", action="store_true",
                   help="add a row of ours without prompt-lookup drafts (--model-args prompt_lookup=0)")
    p.add_argument("--sc", type=int, default=20, help="MedQA questions for sc@5 vs cot (0 skips; default 20)")
    p.add_argument("--markdown", type=Path, help="also write the tables here")
    p.add_argument("--workdir", type=Path, help="keep run folders and logs here")
    args = p.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="genbench-"))
    work.mkdir(parents=True, exist_ok=True)
    lines = machine()
    rows: list[Row] = []
    for dataset in [d for d in args.datasets.split(",") if d]:  # "" runs only the sc@5 table
        ids, prompts, max_tokens = plan_prompts(dataset, args.n, args.data_dir)
        extra = ["--model-args", "dtype=float32"]
        ours, ours_out = run_ours(dataset, args.n, args, work, "harness run (hf)", extra)
        ref = [ours_out.get(i, "") for i in ids]
        others: list[tuple[Row, list[str]]] = []
        if args.ablate:
            off, off_out = run_ours(dataset, args.n, args, work, "harness run (hf, prompt_lookup=0)",
                                    ["--model-args", "dtype=float32,prompt_lookup=0"])
            others.append((off, [off_out.get(i, "") for i in ids]))
        if not args.no_lmeval:
            others.append(run_lmeval(dataset, prompts, max_tokens, args, work, "<|im_end|>"))
        for row, outs in ((ours, ref), *others):
            if row.ok and outs:
                row.tokens = count_tokens(outs)
                row.identical = sum(same(a, b) for a, b in zip(outs, ref, strict=True)) / len(ref)
            row.note = row.note or f"max_tokens {max_tokens}"
        rows += [ours, *(row for row, _ in others)]
        if not args.no_llama:
            rows.append(run_llama(dataset, args, work, ids, ref, max_tokens))
    table = format_rows(rows)
    sc_table = run_sc(args, work) if args.sc else ""
    text = "\n".join(lines) + "\n\n" + table + ("\n\n" + sc_table if sc_table else "") + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0 if all(r.ok for r in rows) else 1


def run_llama(dataset: str, args: argparse.Namespace, work: Path, ids: list[str], ref: list[str],
              max_tokens: int) -> Row:
    sys.path.insert(0, str(ROOT / "tests"))
    from openai_server import llama_cpp_server

    with llama_cpp_server("--n_threads", str(args.threads)) as (url, model_id):
        row, outs = run_ours(dataset, args.n, args, work, "llama.cpp server (openai backend)",
                             ["--backend", "openai", "--base-url", url, "--model", model_id,
                              "--concurrency", "1"])
    if row.ok:
        texts = [outs.get(i, "") for i in ids]
        row.tokens = count_tokens(texts)
        row.identical = sum(same(a, b) for a, b in zip(texts, ref, strict=True)) / len(ref)
        row.note = f"max_tokens {max_tokens}; Q4_1 GGUF weights, so outputs differ"
    return row


def run_sc(args: argparse.Namespace, work: Path) -> str:
    """cot (one greedy chain), sc@1 (one sampled chain) and sc@5 on the same questions: sc@5
    against one greedy chain (the issue's ratio), and against sc@1, which writes chains of the
    same sampled kind, so that ratio isolates the shared prefill and the batched chains from the
    length of sampled answers."""
    runs = [run_ours("medqa_cot", args.sc, args, work, tag, ["--model-args", "dtype=float32"], protocol=proto)[0]
            for tag, proto in (("cot", None), ("sc@1", "sc@1"), ("sc@5", "sc@5"))]
    greedy, one = runs[0].gen_s or 1.0, runs[1].gen_s or 1.0
    out = ["| run | questions | wall s | CPU s | generation s (sum of elapsed_s) | generated tokens | "
           "ms per token | x one greedy chain | x one sampled chain |", "|---|---|---|---|---|---|---|---|---|"]
    for row in runs:
        gen = row.gen_s or 0.0
        per = f"{1000 * gen / row.tokens:.1f}" if row.tokens else ""
        out.append(f"| {row.system} | {row.n} | {row.wall_s:.1f} | {row.cpu_s:.1f} | {gen:.1f} | {row.tokens} | "
                   f"{per} | {gen / greedy:.2f} | {gen / one:.2f} |")
    if args.no_lmeval:
        return "\n".join(out)
    # lm-eval on the same prompts: greedy, and 5 chains by `repeats: 5` at temperature 0.7 (its
    # own sampling, so other chains than ours); lm-eval reports no generation time, so walls
    _, prompts, max_tokens = plan_prompts("medqa_cot", args.sc, args.data_dir)
    lm = [run_lmeval("medqa_cot", prompts, max_tokens, args, work, "<|im_end|>", repeats=k) for k in (1, 5)]
    out += ["", "| run | questions | wall s | CPU s | generated tokens | wall x its greedy run | wall x ours |",
            "|---|---|---|---|---|---|---|"]
    for (row, texts), label, ours in zip(lm, ("cot", "sc@5 (repeats 5)"), (runs[0], runs[2]), strict=True):
        if not row.ok:
            out.append(f"| lm-eval {label} | failed: {row.note} | | | | | |")
            continue
        row.tokens = count_tokens(texts)
        out.append(f"| lm-eval {label} | {row.n} | {row.wall_s:.1f} | "
                   f"{row.cpu_s:.1f} | {row.tokens} | {row.wall_s / lm[0][0].wall_s:.2f} | "
                   f"{row.wall_s / ours.wall_s:.2f} |")
    return "\n".join(out)


def format_rows(rows: list[Row]) -> str:
    out = ["| prompts | system | n | wall s | CPU s | generation s | generated tokens | tokens/s (wall) | "
           "tokens per CPU s | peak RSS MB | identical to ours | note |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ident = "" if r.identical is None else f"{100 * r.identical:.0f} %"
        gen = "" if r.gen_s is None else f"{r.gen_s:.1f}"
        out.append(f"| {r.dataset} | {r.system} | {r.n} | {r.wall_s:.1f} | {r.cpu_s:.1f} | {gen} | {r.tokens} | "
                   f"{r.tok_s:.2f} | {r.tok_cpu_s:.2f} | {r.rss_mb:.0f} | {ident} | {r.note} |")
    by: dict[str, dict[str, Row]] = {}
    for r in rows:
        by.setdefault(r.dataset, {})[r.system] = r
    for dataset, systems in by.items():
        ours, lm = systems.get("harness run (hf)"), systems.get("lm-eval hf generate_until")
        if ours and lm and ours.ok and lm.ok and lm.tok_s:
            out.append(f"\n{dataset}: throughput ours / lm-eval = {ours.tok_s / lm.tok_s:.2f}x by wall time, "
                       f"{ours.tok_cpu_s / max(lm.tok_cpu_s, 1e-9):.2f}x by CPU time")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
