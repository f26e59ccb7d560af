# Sourced on the GPU machine from the repository root, with .gpu/ carried (scripts/gpu-prepare.sh made
# it): installs ComfyUI 0.33's extra packages beside the image's torch, unpacks the ComfyUI tree and
# exports PYTHONPATH and COMFYUI_PATH for the scripts that follow.
site=/tmp/fia-site
mkdir -p "$site" /tmp/fia-comfyui
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .gpu/whl/*.whl
tar -xJf .gpu/comfy_kitchen.tar.xz -C "$site"
tar -xzf .gpu/ComfyUI-*.tar.gz -C /tmp/fia-comfyui
export PYTHONPATH=$site:$PWD COMFYUI_PATH=/tmp/fia-comfyui/ComfyUI PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
