#!/usr/bin/env bash
# `make thumbnails`: workflows/<name>.jpg drawn by scripts/make_thumbnails.py in the newest frontend the
# tests run (NEWEST_FRONTEND, laid in front as in test.sh), served by the newest ComfyUI tree they have.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/comfyui-versions.sh
read -r tree python < <(newest_comfyui)
PYTHONPATH=$PWD/.comfyui/frontend-$NEWEST_FRONTEND COMFYUI_PATH=$tree exec "$python" scripts/make_thumbnails.py "$@"
