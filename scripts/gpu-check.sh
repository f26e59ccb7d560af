#!/usr/bin/env bash
# On the GPU machine, from the repository root, with .gpu/ carried (scripts/gpu-prepare.sh made it):
# installs ComfyUI 0.33's extra packages beside the image's torch, unpacks the ComfyUI tree and runs
# bench/gpu_dynamic_vram.py (arguments go to it). The JSON lands in $OUT when the device tool sets it.
#   device tool: run(command="bash scripts/gpu-check.sh", carry=[".gpu"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-env.sh
python3 bench/gpu_dynamic_vram.py --out "${OUT:-out/bench}/gpu_dynamic_vram.json" "$@"
