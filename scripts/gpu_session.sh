#!/usr/bin/env bash
# What a GPU session runs, in two short phases (a lent GPU machine has minutes, not hours):
#
#   bash scripts/gpu_session.sh wheels   # here, before: radiofm + onnxslim wheels into .whl/
#   bash scripts/gpu_session.sh check    # GPU: Triton kernels at real shapes (benchmarks/gpu_check.sh)
#                                        #      + the GPU benchmark table (vit-s, signals-nano)
#   bash scripts/gpu_session.sh train    # GPU: a vit-s classifier trained briefly on `signals`, for
#                                        #      the CPU export and benchmark figures (#5, #8)
#   bash scripts/gpu_session.sh xeon     # GPU machine, after `train` in the same lease: vit-s CPU
#                                        #      latency/agreement on 2 cores of its AMX-capable host
#   bash scripts/gpu_session.sh unpack DIR MODEL_DIR   # here, after `train`: rebuild the model folder
#
# Results go to $OUT (default gpu-results/<date>/). Where radiofm is not installed (the GPU image has
# torch, triton, onnx and onnxruntime but not radiofm or onnxslim), the wheels in .whl/ are installed
# into /tmp/radiofm-site first. The trained weights come back as xz-compressed bf16 safetensors cut
# into 15 MB parts, since a device call returns at most 8 files of 16 MiB.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PHASE="${1:-check}"
OUT="${OUT:-$ROOT/gpu-results/$(date -u +%Y-%m-%d)}"
WORK="${RADIOFM_GPU_WORK:-/tmp/radiofm-gpu}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1

if [ "$PHASE" = wheels ]; then
    rm -rf .whl && mkdir .whl
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl .
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl "onnxslim==$("$PY" -c 'import onnxslim; print(onnxslim.__version__)')"
    ls -l .whl
    exit 0
fi

if [ "$PHASE" = unpack ]; then  # unpack PARTS_DIR MODEL_DIR
    src="$2" dst="$3"
    mkdir -p "$dst"
    cat "$src"/vit-s-signals.safetensors.xz.part* | xz -d > "$dst/model.safetensors.tmp"
    tar -xzf "$src/vit-s-signals-info.tar.gz" -C "$dst" config.json
    mv "$dst/model.safetensors.tmp" "$dst/model.safetensors"
    "$PY" -c "from radiofm.checkpoint import load_model; m = load_model('$dst'); print('$dst', m.cfg.name, sum(p.numel() for p in m.parameters()), 'parameters')"
    exit 0
fi

if ! (cd /tmp && "$PY" -c "import radiofm.kernels, onnxslim" 2>/dev/null); then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/radiofm-site .whl/*.whl
    export PYTHONPATH="/tmp/radiofm-site${PYTHONPATH:+:$PYTHONPATH}"
fi
# Run radiofm from outside the checkout, whose radiofm/ folder would shadow the installed package.
rfm() { (cd "$WORK" && "$PY" -m radiofm.cli "$@"); }
# The final model folder of the vit-s run that `train` writes.
trained_model() { (cd "$WORK" && "$PY" -c "from radiofm.checkpoint import resolve_model_dir; print(resolve_model_dir('vit-s-signals'))"); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
(cd "$WORK" && "$PY" -c "import torch, triton, radiofm; print('torch', torch.__version__, 'triton', triton.__version__, 'radiofm', radiofm.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')")
STAMP="$(date -u +%Y-%m-%d)"
GPU="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9-' || true)"

case "$PHASE" in
check)
    # (1) kernels: correctness at real shapes, then microbenchmarks while the budget lasts
    OUT="$OUT" bash benchmarks/gpu_check.sh --budget-s "${CHECK_BUDGET_S:-100}" || echo "gpu_check exit $?"
    # (2) the GPU benchmark table: eager, CUDA graphs, CUDA graphs + Triton kernels
    rm -rf "$WORK/signals-test"
    rfm data synth --task signals --n 800 --out "$WORK/signals-test" --seed 103 --workers "$(nproc)" >/dev/null
    rfm bench signals-nano -e torch -e torch-graph -e torch-triton -p fp32 -p fp16 -b 1 -b 64 --device cuda \
        --warmup 20 -n 200 --data "$WORK/signals-test" --json "$OUT/bench-$GPU-$STAMP-signals-nano.json" \
        --plot "$OUT/bench-$GPU-$STAMP-signals-nano.png" || echo "bench signals-nano failed"
    rfm bench vit-s -e torch -e torch-graph -e torch-triton -p fp32 -p fp16 -b 1 -b 64 --device cuda \
        --warmup 20 -n 100 --json "$OUT/bench-$GPU-$STAMP-vit-s.json" || echo "bench vit-s failed"
    ;;
train)
    EPOCHS="${EPOCHS:-10}" N="${N:-24000}" MODEL="${MODEL:-vit-s}" IMG="${IMG:-224x224}"
    rm -rf "$WORK/signals-train" "$WORK/signals-test" "$WORK/vit-s-signals" "$WORK/pack"
    T0=$(date +%s)
    rfm data synth --task signals --n "$N" --out "$WORK/signals-train" --seed 11 --workers "$(nproc)" >/dev/null
    rfm data synth --task signals --n 800 --out "$WORK/signals-test" --seed 103 --workers "$(nproc)" >/dev/null
    T1=$(date +%s)
    rfm train finetune --task classify --model "$MODEL" --data "$WORK/signals-train" --mode full --epochs "$EPOCHS" \
        --batch "${BATCH:-256}" --blr 1e-3 --layer-decay 1.0 --warmup-epochs 1 --img-size "$IMG" --no-progress \
        --out "$WORK/vit-s-signals" 2>&1 | tee "$WORK/train.log" | grep -v "^step" || true
    T2=$(date +%s)
    rfm eval "$WORK/vit-s-signals" --data "$WORK/signals-test" --json "$WORK/vit-s-signals-eval.json" \
        --png "$WORK/vit-s-signals-eval.png" 2>&1 | tee "$WORK/eval.log" | tail -3 || true
    echo "data $((T1 - T0)) s, training $((T2 - T1)) s" | tee "$WORK/times.txt"
    model="$(trained_model)"
    (cd "$WORK" && "$PY" - "$model" "$WORK/pack" <<'EOF'
import sys
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
state = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(src / "model.safetensors")).items()}
save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
(dst / "config.json").write_text((src / "config.json").read_text())
EOF
    )
    xz -T0 -6 -c "$WORK/pack/model.safetensors" | split -b 15000000 -d - "$OUT/vit-s-signals.safetensors.xz.part"
    cp "$WORK/pack/config.json" "$WORK/config.json"
    tar -czf "$OUT/vit-s-signals-info.tar.gz" -C "$WORK" config.json train.log eval.log times.txt \
        $(cd "$WORK" && ls vit-s-signals-eval.json vit-s-signals-eval.png vit-s-signals/metrics.jsonl 2>/dev/null)
    ls -l "$OUT"
    ;;
xeon)
    # After `train` on the same machine: vit-s at batch 1 on two cores of the GPU machine's host CPU
    # (a Xeon with AVX-512 VNNI and AMX, the CPU class the CPU latency target was set for).
    model="$(trained_model)"
    taskset -c 0,1 "$PY" -c "import os; print('cores', sorted(os.sched_getaffinity(0)))"
    (cd "$WORK" && taskset -c 0,1 "$PY" -m radiofm.cli bench "$model" -e torch -e onnx -p fp32 -p bf16 -p int8 -b 1 \
        --threads 2 --data "$WORK/signals-test" --limit 800 --json "$OUT/bench-xeon-2core-$STAMP-vit-s-signals.json" \
        --plot "$OUT/bench-xeon-2core-$STAMP-vit-s-signals.png") || echo "xeon bench failed"
    ;;
*)
    echo "usage: $0 wheels|check|train|xeon|unpack" >&2
    exit 2
    ;;
esac
