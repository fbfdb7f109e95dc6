#!/usr/bin/env bash
# GPU check of the Triton kernels: correctness at real shapes and microbenchmarks, written to
# $OUT/gpu_check.json (default benchmarks/results/<date>/). About 70 s on an H100 (2026-11-27).
#   bash benchmarks/gpu_check.sh [--budget-s SECONDS]
# Nothing is installed: gpu_check.py loads kernels/ as radiofm.kernels when radiofm is not installed,
# so the script also runs offline in an image that only has torch and triton.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/$(date -u +%Y-%m-%d)}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi not found"
"${PYTHON:-python3}" benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
