#!/usr/bin/env bash
# The GPU half of the training benchmark (a prepared script, not run in CI): `gap train` vs a plain
# TRL SFTTrainer + peft script on a random-weight Qwen2-VL of about 1.5 B parameters built from a
# config (no download), 448 x 448 images (256 visual tokens), bf16, plus each side's peak GPU memory.
# Then one short multi-process launch check when the machine has several GPUs.
#
#   benchmarks/gpu_train.sh [OUT_DIR]      # figures in OUT_DIR/bench_train_gpu.json (default ./bench-out)
#
# Needs a CUDA build of torch and the train extra: pip install -c constraints.txt -e '.[train]'
# (constraints.txt pins the CPU torch wheel; on the GPU machine install the CUDA torch first).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-bench-out}}"
mkdir -p "$OUT"
PY="${PYTHON:-.venv/bin/python}"  # GAP=... names the gap command of the same environment
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine"
print(torch.__version__, torch.cuda.get_device_name(0), f"bf16={torch.cuda.is_bf16_supported()}")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

# 1. samples/s and peak memory, ours vs TRL, twice each (best kept), 30 steps of batch 4
timeout 540 "$PY" benchmarks/bench_train.py --size gpu --precision bf16 --steps 30 --batch 4 \
  --records 64 --repeats 2 --json "$OUT/bench_train_gpu.json" 2>&1 | tee "$OUT/bench_train_gpu.log"

# 2. DDP through the shipped accelerate config, when there are at least two GPUs
GPUS="$(nvidia-smi -L | wc -l)"
if [ "$GPUS" -ge 2 ]; then
  "$PY" - "$OUT" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from bench_train import make_export
from gap.train._tiny import make_tiny_family
out = Path(sys.argv[1])
make_tiny_family("qwen2_vl", out / "ddp-model", size="bench")
make_export(out / "ddp-data", 32, (224, 224))
PY
  timeout 300 "${GAP:-.venv/bin/gap}" train --model "$OUT/ddp-model" --data "$OUT/ddp-data/export" \
    --out "$OUT/ddp-run" --max-steps 10 --batch-size 4 --precision bf16 \
    --launcher accelerate --accelerate-config ddp --set save_steps=1000 2>&1 | tee "$OUT/ddp.log"
fi
echo "figures in $OUT"
