#!/usr/bin/env bash
# Creates .venv and installs radiofm (editable) with its test extras.
# Where no NVIDIA GPU is present and torch is not installed yet, the CPU build of torch goes in
# first (RADIOFM_CPU_TORCH, default torch==2.13.0), so the plain torch requirement does not pull a
# multi-GB CUDA build. On a GPU machine pip resolves torch from the package's range as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "setup: NVIDIA GPU found; torch comes from the package requirements"
    else
        echo "setup: no GPU; installing the CPU build of torch first"
        "${pip[@]}" install "${RADIOFM_CPU_TORCH:-torch==2.13.0}"
    fi
fi
"${pip[@]}" install -e ".[test]"
echo "setup: radiofm installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
