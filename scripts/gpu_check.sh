#!/usr/bin/env bash
# GPU check of the real-model path, on a CUDA machine after `pip install -e '.[vllm]'`:
#   1. build: the tiny synthetic world and a small random Qwen2 checkpoint (bf16 on disk);
#   2. backend: the real vLLM engine through VLLMGenerator (seeds, stop strings, log-probs vs HF,
#      multi-turn rollouts);
#   3. train: 3 IGSearchTrainer steps with vLLM colocate and bf16 autocast on fp32 master weights.
# Prints one PASS/FAIL line per check, then a summary; exits 1 if any check failed. About 3-5 min
# on one GPU; each stage has its own time limit so the whole run stays under 8 minutes.
# usage: scripts/gpu_check.sh [OUT_DIR]      (PYTHON=... picks the interpreter)
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${1:-$(mktemp -d "${TMPDIR:-/tmp}/igsearch-gpu-check.XXXXXX")}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
failed=0

# stage NAME SECONDS COMMAND...: runs COMMAND with a time limit, its output teed to OUT/NAME.log.
stage() {
    local name="$1" limit="$2"
    shift 2
    echo "== $name (limit ${limit}s, log $OUT/$name.log)"
    local rc=0
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
    grep -E '^(PASS|FAIL|INFO) ' "$OUT/$name.log" || true
    if [ "$rc" -ne 0 ]; then
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            echo "FAIL $name: timed out after ${limit}s"
        else
            echo "FAIL $name: exit status $rc; last lines of the log:"
        fi
        tail -n 25 "$OUT/$name.log" | sed 's/^/    /'
        failed=1
    fi
}

stage environment 120 "$PYTHON" -c '
import torch, vllm, trl, transformers
assert torch.cuda.is_available(), "no CUDA device visible"
print(f"PASS environment: torch {torch.__version__}, vllm {vllm.__version__}, trl {trl.__version__}, "
      f"transformers {transformers.__version__}, {torch.cuda.get_device_name(0)}")
'
if [ "$failed" -ne 0 ]; then
    echo "SUMMARY FAIL (environment: install with pip install -e '.[vllm]' on a CUDA machine)"
    exit 1
fi
stage build 120 "$PYTHON" scripts/gpu_check.py build "$OUT"
if [ "$failed" -eq 0 ]; then
    stage backend 150 "$PYTHON" scripts/gpu_check.py backend "$OUT"
    stage train 240 "$PYTHON" scripts/gpu_check.py train "$OUT"
fi
if [ "$failed" -eq 0 ]; then echo "SUMMARY PASS (outputs in $OUT)"; else echo "SUMMARY FAIL (logs in $OUT)"; fi
exit "$failed"
