#!/usr/bin/env bash
# The paper's comparison at our scale (docs/training.md): scratch against MSM-pretrained vit-pico
# encoders (mask 0.70 / 0.75 / 0.80; linear probe and full fine-tuning) on lte-nr and signals, with all
# labels and with 10 %, two runs at a time, one thread each. Prints the table in docs/training.md.
#
#   bash scripts/paper_comparison.sh [WORK]      # WORK defaults to /tmp/rfm/paper; about 40 min on 2 cores
#
# Data, encoders and runs go under WORK; a run whose eval.json exists is not run again, so an
# interrupted comparison goes on where it stopped when started again.
set -euo pipefail
WORK=${1:-/tmp/rfm/paper}
RADIOFM=${RADIOFM:-$(command -v radiofm || echo "$(dirname "$0")/../.venv/bin/radiofm")}
D=$WORK/data R=$WORK/encoders E=$WORK/runs
mkdir -p "$D" "$R" "$E"
export RADIOFM D R E

# Data: sample i depends only on (seed, i), so these are the zoo's training and test sets (or their first items).
"$RADIOFM" data synth --task pretrain --n 4000 --out "$D/pretrain" --seed 1 --workers 2 --no-progress
"$RADIOFM" data synth --task lte-nr --n 800 --out "$D/lte-nr-train" --seed 2 --workers 2 --no-progress
"$RADIOFM" data synth --task signals --n 1600 --out "$D/signals-exp" --seed 3 --workers 2 --no-progress
"$RADIOFM" data synth --task lte-nr --n 200 --out "$D/lte-nr-test" --seed 102 --workers 2 --no-progress
"$RADIOFM" data synth --task signals --n 800 --out "$D/signals-test" --seed 103 --workers 2 --no-progress

pretrain() {
  [ -d "$R/msm-m$1/final" ] && return 0
  "$RADIOFM" train pretrain --data "$D/pretrain" --model vit-pico --mask-ratio "0.$1" --epochs 4 --batch 32 \
      --sample-every 4 --threads 1 --no-progress --out "$R/msm-m$1" > "$R/msm-m$1.log" 2>&1
}
finetune() {  # TASK FRACTION ROW
  local task=$1 fraction=$2 row=$3 out=$E/$1-$2-$3 args test init
  [ -f "$out/eval.json" ] && return 0
  if [ "$task" = signals ]; then
    args="--task classify --data $D/signals-exp --img-size 256x64 --epochs 3 --batch 32 --blr 4e-3"; test=$D/signals-test
  else
    args="--task segment --data $D/lte-nr-train --epochs 4 --batch 32 --blr 4e-3 --class-weights auto"; test=$D/lte-nr-test
  fi
  case $row in
    scratch) init="--model vit-pico --mode full" ;;
    *-linear) init="--init $R/msm-${row%-linear} --mode linear-probe" ;;
    *-full) init="--init $R/msm-${row%-full} --mode full" ;;
  esac
  local start=$SECONDS
  # shellcheck disable=SC2086  # the option strings are meant to split
  "$RADIOFM" train finetune $args $init --label-fraction "$fraction" --threads 1 --no-progress --out "$out" > "$out.log" 2>&1
  echo $((SECONDS - start)) > "$out.wall_s"
  "$RADIOFM" eval "$out" --data "$test" --json "$out/eval.json" > "$out.eval.log" 2>&1
}
export -f pretrain finetune

printf '%s\n' 70 75 80 | xargs -P 2 -I{} bash -c 'pretrain {}'
for task in lte-nr signals; do for fraction in 1.0 0.1; do
  for row in scratch m70-linear m70-full m75-linear m75-full m80-linear m80-full; do echo "$task $fraction $row"; done
done; done | xargs -P 2 -L 1 bash -c 'finetune "$0" "$1" "$2"'

python3 - "$E" <<'EOF'
import json, sys
from pathlib import Path
runs = Path(sys.argv[1])
rows = [("from scratch", "full", "scratch")] + [(f"MSM 0.{m}", mode, f"m{m}-{key}") for m in (70, 75, 80)
                                                 for mode, key in (("linear probe", "linear"), ("full", "full"))]
def cell(task, fraction, row):
    run = runs / f"{task}-{fraction}-{row}"
    ev = json.loads((run / "eval.json").read_text())
    a, b = (ev["mean_class_accuracy"], ev["miou"]) if task == "lte-nr" else (ev["accuracy"], ev["accuracy_snr_ge_10db"])
    return f"{100 * a:.1f} / {100 * b:.1f} ({Path(f'{run}.wall_s').read_text().strip()} s)"
print("| init | mode | lte-nr, all labels | lte-nr, 10 % | signals, all labels | signals, 10 % |")
print("|---|---|---|---|---|---|")
for init, mode, row in rows:
    print(f"| {init} | {mode} | " + " | ".join(cell(t, f, row) for t in ("lte-nr", "signals") for f in ("1.0", "0.1")) + " |")
EOF
