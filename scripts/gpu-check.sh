#!/usr/bin/env bash
# On the GPU machine, from the repository root, with .gpu/ carried (scripts/gpu-prepare.sh made it):
# installs ComfyUI 0.33's extra packages beside the image's torch, unpacks the ComfyUI tree and runs
# bench/gpu_dynamic_vram.py (arguments go to it). The JSON lands in $OUT when the device tool sets it.
#   device tool: run(command="bash scripts/gpu-check.sh", carry=[".gpu"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
site=/tmp/fia-site
mkdir -p "$site" /tmp/fia-comfyui
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .gpu/whl/*.whl
tar -xJf .gpu/comfy_kitchen.tar.xz -C "$site"
tar -xzf .gpu/ComfyUI-*.tar.gz -C /tmp/fia-comfyui
export PYTHONPATH=$site COMFYUI_PATH=/tmp/fia-comfyui/ComfyUI PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 bench/gpu_dynamic_vram.py --out "${OUT:-out/bench}/gpu_dynamic_vram.json" "$@"
