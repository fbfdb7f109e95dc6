#!/usr/bin/env bash
# What a GPU session runs (a lent GPU machine has minutes, not hours). Phases run in the order given:
#
#   bash scripts/gpu_session.sh wheels [PARTS_DIR]  # here, before: the onnxslim wheel into .whl/ and,
#                                                   #   given, a trained vit-s's parts into .gpu-model/
#   bash scripts/gpu_session.sh kernels   # GPU: the Triton kernels at real shapes (benchmarks/gpu_check.sh)
#   bash scripts/gpu_session.sh check     # GPU: kernels + the GPU benchmark table (vit-s, signals-nano)
#   bash scripts/gpu_session.sh train     # GPU: a vit-s classifier trained briefly on `signals`, for
#                                         #      the CPU export and benchmark figures (#5, #8)
#   bash scripts/gpu_session.sh xeon      # GPU machine: vit-s CPU latency/agreement on 2 cores of its
#                                         #      AMX-capable host; the model from `train` in the same
#                                         #      lease, else the parts carried in .gpu-model/
#   bash scripts/gpu_session.sh kernels xeon      # both, in one call
#   bash scripts/gpu_session.sh unpack PARTS_DIR MODEL_DIR   # here, after `train`: rebuild the model
#
# Results go to $OUT (default gpu-results/<date>/). The GPU image has torch, triton, onnx and
# onnxruntime but not radiofm or onnxslim: radiofm is staged from this checkout into /tmp/radiofm-site
# (the package layout read from pyproject.toml) and the wheels in .whl/ are installed beside it. Carry
# `.whl`, and `.gpu-model` for `xeon` without `train`. The trained weights travel as xz-compressed
# bf16 safetensors cut into 15 MB parts: a device call returns at most 8 files of 16 MiB and carries
# at most 64 MiB.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu-results/$(date -u +%Y-%m-%d)}"
WORK="${RADIOFM_GPU_WORK:-/tmp/radiofm-gpu}"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
[ $# -gt 0 ] || set -- check

# Rebuild a model folder from the parts that `train` returns.
unpack_model() {  # PARTS_DIR MODEL_DIR
    local src="$1" dst="$2"
    mkdir -p "$dst"
    cat "$src"/vit-s-signals.safetensors.xz.part* | xz -d > "$dst/model.safetensors.tmp"
    tar -xzf "$src/vit-s-signals-info.tar.gz" -C "$dst" config.json
    mv "$dst/model.safetensors.tmp" "$dst/model.safetensors"
    (cd /tmp && "$PY" -c "from radiofm.checkpoint import load_model; m = load_model('$dst'); print('$dst', m.cfg.name, sum(p.numel() for p in m.parameters()), 'parameters')")
}

case "$1" in
wheels)  # wheels [PARTS_DIR]
    rm -rf .whl && mkdir .whl
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl "onnxslim==$("$PY" -c 'import onnxslim; print(onnxslim.__version__)')"
    if [ -n "${2:-}" ]; then
        rm -rf .gpu-model && mkdir .gpu-model
        cp "$2"/vit-s-signals.safetensors.xz.part* "$2"/vit-s-signals-info.tar.gz .gpu-model/
    fi
    for path in /.whl/ /.gpu-model/; do
        grep -qx "$path" .git/info/exclude || echo "$path" >> .git/info/exclude
    done
    ls -l .whl $(ls -d .gpu-model 2>/dev/null)
    # What a call carries: tracked and untracked-not-ignored files, plus .whl and .gpu-model.
    total=$( { git ls-files -co --exclude-standard -z | xargs -0 cat 2>/dev/null; cat .whl/* .gpu-model/* 2>/dev/null || true; } | wc -c)
    echo "a call carries about $((total / 1048576)) MiB (limit 64)"
    exit 0
    ;;
unpack)  # unpack PARTS_DIR MODEL_DIR
    unpack_model "$2" "$3"
    exit 0
    ;;
esac

# ------------------------------------------------------------------ on the GPU machine
mkdir -p "$OUT" "$WORK"
if ! (cd /tmp && "$PY" -c "import radiofm.kernels, onnxslim" 2>/dev/null); then
    SITE=/tmp/radiofm-site
    rm -rf "$SITE" && mkdir -p "$SITE"
    # radiofm as setuptools installs it: each package-dir entry copied to its package's path.
    "$PY" - "$SITE" <<'PYEOF'
import shutil, sys, tomllib
from pathlib import Path
site = Path(sys.argv[1])
dirs = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
for package, src in sorted(dirs.items(), key=lambda item: item[0].count(".")):  # radiofm before radiofm.*
    shutil.copytree(src, site / package.replace(".", "/"), dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
PYEOF
    if ls .whl/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
# Run radiofm from outside the checkout, whose radiofm/ folder would shadow the staged package.
rfm() { (cd "$WORK" && "$PY" -m radiofm.cli "$@"); }
# The final model folder of the vit-s run that `train` writes.
trained_model() { (cd "$WORK" && "$PY" -c "from radiofm.checkpoint import resolve_model_dir; print(resolve_model_dir('vit-s-signals'))"); }
# The 800 `signals` test captures that every vit-s and signals-nano figure is scored on (seed 103).
test_set() {
    [ -f "$WORK/signals-test/.complete" ] && return 0
    rm -rf "$WORK/signals-test"
    rfm data synth --task signals --n 800 --out "$WORK/signals-test" --seed 103 --workers "$(nproc)" >/dev/null
    touch "$WORK/signals-test/.complete"
}
kernels() {
    # Correctness at real shapes, then microbenchmarks and the config sweep while the budget lasts.
    OUT="$OUT" bash benchmarks/gpu_check.sh --budget-s "${CHECK_BUDGET_S:-100}" --sweep-s "${SWEEP_S:-90}" \
        || echo "gpu_check exit $?"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
(cd "$WORK" && "$PY" -c "import torch, triton, radiofm; print('torch', torch.__version__, 'triton', triton.__version__, 'radiofm', radiofm.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')")
STAMP="$(date -u +%Y-%m-%d)"
GPU="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9-' || true)"

for PHASE in "$@"; do
echo "== phase $PHASE ($(date -u +%H:%M:%S))"
case "$PHASE" in
kernels)
    kernels
    ;;
check)
    kernels
    # The GPU benchmark table: eager, CUDA graphs, CUDA graphs + Triton kernels.
    test_set
    rfm bench signals-nano -e torch -e torch-graph -e torch-triton -p fp32 -p fp16 -b 1 -b 64 --device cuda \
        --warmup 20 -n 200 --data "$WORK/signals-test" --json "$OUT/bench-$GPU-$STAMP-signals-nano.json" \
        --plot "$OUT/bench-$GPU-$STAMP-signals-nano.png" || echo "bench signals-nano failed"
    rfm bench vit-s -e torch -e torch-graph -e torch-triton -p fp32 -p fp16 -b 1 -b 64 --device cuda \
        --warmup 20 -n 100 --json "$OUT/bench-$GPU-$STAMP-vit-s.json" || echo "bench vit-s failed"
    ;;
train)
    EPOCHS="${EPOCHS:-10}" N="${N:-24000}" MODEL="${MODEL:-vit-s}" IMG="${IMG:-224x224}"
    rm -rf "$WORK/signals-train" "$WORK/vit-s-signals" "$WORK/pack"
    T0=$(date +%s)
    rfm data synth --task signals --n "$N" --out "$WORK/signals-train" --seed 11 --workers "$(nproc)" >/dev/null
    test_set
    T1=$(date +%s)
    rfm train finetune --task classify --model "$MODEL" --data "$WORK/signals-train" --mode full --epochs "$EPOCHS" \
        --batch "${BATCH:-256}" --blr 1e-3 --layer-decay 1.0 --warmup-epochs 1 --img-size "$IMG" --no-progress \
        --out "$WORK/vit-s-signals" 2>&1 | tee "$WORK/train.log" | grep -v "^step" || true
    T2=$(date +%s)
    rfm eval "$WORK/vit-s-signals" --data "$WORK/signals-test" --json "$WORK/vit-s-signals-eval.json" \
        --png "$WORK/vit-s-signals-eval.png" 2>&1 | tee "$WORK/eval.log" | tail -3 || true
    echo "data $((T1 - T0)) s, training $((T2 - T1)) s" | tee "$WORK/times.txt"
    model="$(trained_model)"
    (cd "$WORK" && "$PY" - "$model" "$WORK/pack" <<'PYEOF'
import sys
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
state = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(src / "model.safetensors")).items()}
save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
(dst / "config.json").write_text((src / "config.json").read_text())
PYEOF
    )
    xz -T0 -6 -c "$WORK/pack/model.safetensors" | split -b 15000000 -d - "$OUT/vit-s-signals.safetensors.xz.part"
    cp "$WORK/pack/config.json" "$WORK/config.json"
    tar -czf "$OUT/vit-s-signals-info.tar.gz" -C "$WORK" config.json train.log eval.log times.txt \
        $(cd "$WORK" && ls vit-s-signals-eval.json vit-s-signals-eval.png vit-s-signals/metrics.jsonl 2>/dev/null)
    ls -l "$OUT"
    ;;
xeon)
    # vit-s at batch 1 on two cores of the GPU machine's host CPU (a Xeon with AVX-512 VNNI and AMX,
    # the CPU class the CPU latency target was set for): the `train` model of this lease if there is
    # one, else the carried parts (the model the 2-core EPYC figures were measured on).
    model="$(trained_model 2>/dev/null || true)"
    if [ -z "$model" ]; then
        if [ ! -f .gpu-model/vit-s-signals-info.tar.gz ]; then
            echo "xeon: no trained vit-s: run train first in this lease, or carry .gpu-model (wheels PARTS_DIR)" >&2
            exit 2
        fi
        model="$WORK/vit-s-carried"
        rm -rf "$model"
        unpack_model .gpu-model "$model"
    fi
    test_set
    lscpu | grep "^Model name" || true
    echo "flags: $(grep -o -w -E 'avx512f|avx512_vnni|avx512_bf16|amx_tile|amx_bf16|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    # The ONNX exports on every core (the bench takes a model folder's own exports, and partial-scope
    # int8 from its --work folder; an int8 export writes the fp32 file it derives from too), the
    # timed runs on two.
    bench_work="$WORK/bench-work"
    rm -rf "$bench_work" && mkdir -p "$bench_work"
    rfm export "$model" -p int8 2>&1 | tail -3 || echo "xeon export failed"
    rfm export "$model" -p int8 --int8-scope partial -o "$bench_work/$(basename "$model")-onnx" 2>&1 | tail -3 \
        || echo "xeon partial-scope export failed"
    # Two logical CPUs on different physical cores: on hosts that number SMT siblings next to each
    # other, "0,1" would be one core's two hyperthreads.
    cpus="$("$PY" - <<'PYEOF'
import os
picked, cores = [], set()
for cpu in sorted(os.sched_getaffinity(0)):
    try:
        topo = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        core = tuple(open(topo + name).read().strip() for name in ("physical_package_id", "core_id"))
    except OSError:
        core = (cpu,)
    if core not in cores:
        cores.add(core)
        picked.append(cpu)
print(",".join(map(str, picked[:2])))
PYEOF
)"
    pin="taskset -c $cpus"
    command -v taskset >/dev/null || { pin=""; echo "taskset missing: 2 threads, not pinned to 2 cores"; }
    $pin "$PY" -c "import os; print('bench cpus', sorted(os.sched_getaffinity(0)))"
    for cpu in ${cpus//,/ }; do
        echo "cpu$cpu siblings: $(cat /sys/devices/system/cpu/cpu$cpu/topology/thread_siblings_list 2>/dev/null || echo unknown)"
    done
    (cd "$WORK" && $pin "$PY" -m radiofm.cli bench "$model" -e torch -e onnx -p fp32 -p bf16 -p int8 -b 1 \
        --threads 2 -n "${REPEAT:-50}" --data "$WORK/signals-test" --limit "${LIMIT:-800}" --json "$OUT/bench-xeon-2core-$STAMP-vit-s-signals.json" \
        --plot "$OUT/bench-xeon-2core-$STAMP-vit-s-signals.png") || echo "xeon bench failed"
    # int8 of the MLP MatMuls only (qkv and output projections float), against ONNX fp32.
    (cd "$WORK" && $pin "$PY" -m radiofm.cli bench "$model" -e onnx -p fp32 -p int8 --int8-scope partial -b 1 \
        --threads 2 -n "${REPEAT:-50}" --data "$WORK/signals-test" --limit "${LIMIT:-800}" --work "$bench_work" \
        --json "$OUT/bench-xeon-2core-$STAMP-vit-s-signals-int8-partial.json") || echo "xeon partial-scope bench failed"
    ;;
*)
    echo "usage: $0 wheels [PARTS_DIR] | kernels | check | train | xeon | unpack PARTS_DIR MODEL_DIR (phases may be chained)" >&2
    exit 2
    ;;
esac
done
