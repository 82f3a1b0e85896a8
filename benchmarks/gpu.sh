#!/usr/bin/env bash
# GPU throughput benchmark (issue #5): the same `brainseg3d bench` as on CPU, with --device cuda,
# plus a sweep of the batch runner's loader threads (--workers), which set the cases/s on a GPU.
#
#   benchmarks/gpu.sh CASES_DIR OUT_DIR [N_BATCH]
#
# CASES_DIR: BraTS case folders (with *_seg for Dice); OUT_DIR gets bench_cuda.json and
# sweep_workers_<W>.json. Needs brainseg3d importable (pip install -e . or PYTHONPATH).
set -euo pipefail
cases=$1; out=$2; nbatch=${3:-100}
mkdir -p "$out"
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
# 1. reference vs ours (fp32, bf16) per case, then a batch of N_BATCH cases (cycled) with default workers
"$py" -m brainseg3d bench "$cases" --n 2 --device cuda --pipelines reference,ours-fp32,ours-bf16 \
    --memory-batch "$nbatch" --out "$out/bench_cuda.json"
# 2. cases/s against loader threads
for w in 2 4 8 12; do
    echo "== workers $w"
    "$py" -m brainseg3d bench "$cases" --n 1 --device cuda --pipelines ours-bf16 --memory-batch 64 \
        --workers "$w" --out "$out/sweep_workers_$w.json" | grep -E "cases/s|ours"
done
