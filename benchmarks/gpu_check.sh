#!/usr/bin/env bash
# GPU check (issue 18): the quick suite with transformers on the GPU (bf16) and with vLLM (bf16),
# both tables, the share of identical predictions, the throughput ratio and vLLM's engine settings.
# Exit 1 if a prediction differs beyond a bf16 tie (the two options' log-likelihoods within
# TIE_NATS, default 0.1, in either run); 2 if the machine or a run is not usable.
#
#   bash benchmarks/gpu_check.sh            # needs the harness installed (scripts/install.sh)
#   OUT_DIR=/tmp/gpu MODEL=/ckpt TIE_NATS=0.05 bash benchmarks/gpu_check.sh
#
# Under 10 minutes on one GPU with the default model (each run is capped by `timeout`); it installs
# nothing except `.[vllm]` when vLLM is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT_DIR:-$(mktemp -d)}
TIE_NATS=${TIE_NATS:-0.1}
MODEL_FLAG=()
if [ -n "${MODEL:-}" ]; then MODEL_FLAG=(--model "$MODEL"); fi
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU visible to torch" >&2; exit 2
fi
if ! "$PY" -c "import vllm" 2>/dev/null; then
  echo "gpu_check: installing .[vllm]"
  "$PY" -m pip install -q -e ".[vllm]"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
mkdir -p "$OUT"

run() {  # name, time limit (s), backend args...
  local name=$1 limit=$2; shift 2
  local start end
  start=$(date +%s.%N)
  if ! timeout "$limit" "$PY" -m harness.cli.app run --suite quick "${MODEL_FLAG[@]}" --no-cache --quiet \
      --output "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1; then
    echo "gpu_check: the $name run failed or exceeded ${limit}s; last lines of $OUT/$name.log:" >&2
    tail -n 20 "$OUT/$name.log" >&2; exit 2
  fi
  end=$(date +%s.%N)
  echo "$start $end" > "$OUT/$name.wall"
}

run hf 240 --backend hf --model-args device=cuda,dtype=bfloat16 --batch-size 32
run vllm 300 --backend vllm --model-args dtype=bfloat16,gpu_memory_utilization=0.5

OUT="$OUT" TIE_NATS="$TIE_NATS" "$PY" - <<'EOF'
import json, os, sys
from pathlib import Path

from harness.run.records import read_record
from harness.run.report import format_record

out, tie = Path(os.environ["OUT"]), float(os.environ["TIE_NATS"])

def samples(name):
    rows = [json.loads(x) for x in (out / name / "samples.jsonl").read_text().splitlines() if x.strip()]
    return {(e["task_key"], e["sample_id"]): e["score"]["metadata"] for e in rows}

rec = {n: read_record(out / n) for n in ("hf", "vllm")}
for n in ("hf", "vllm"):
    print(f"== {n} ==")
    print(format_record(rec[n]))
hf, vl = samples("hf"), samples("vllm")
assert hf.keys() == vl.keys(), "the runs scored different samples"
same = [k for k in hf if hf[k]["pred_index"] == vl[k]["pred_index"]]
real = []
for k in hf.keys() - set(same):
    a, b = hf[k]["pred_index"], vl[k]["pred_index"]
    gap = min(abs(m["logprobs"][a] - m["logprobs"][b]) for m in (hf[k], vl[k]))
    if gap > tie:
        real.append((k, round(gap, 4)))
print(f"identical predictions: {len(same)}/{len(hf)} = {len(same) / len(hf):.1%}; "
      f"{len(hf) - len(same) - len(real)} bf16 ties (within {tie} nats), {len(real)} real differences")
for k, gap in sorted(real)[:20]:
    print(f"  differs: {k[0]} {k[1]} (gap {gap} nats)")
def rate(n):
    secs = sum(t.duration_s or 0 for t in rec[n].tasks.values())
    start, end = map(float, (out / f"{n}.wall").read_text().split())
    return len(hf) / secs, end - start
(h, hw), (v, vw) = rate("hf"), rate("vllm")
print(f"throughput (scoring only): hf {h:.1f} q/s, vllm {v:.1f} q/s, ratio vllm/hf {v / h:.2f}x; "
      f"wall incl. start-up: hf {hw:.0f} s, vllm {vw:.0f} s")
args = rec["vllm"].model.args
print("vllm engine settings:", json.dumps({k: args.get(k) for k in (
    "dtype", "tensor_parallel_size", "data_parallel_size", "max_model_len", "gpu_memory_utilization",
    "enforce_eager", "seed", "loglik_mode", "vllm_version")}))
print("vllm loglik paths:", json.dumps({k: v for k, v in rec["vllm"].requests.items() if k.startswith("loglik")}))
sys.exit(1 if real else 0)
EOF
