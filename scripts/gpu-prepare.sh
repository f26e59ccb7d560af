#!/usr/bin/env bash
# Run here (PyPI reachable), once: gathers into .gpu/ (ignored; name it in the device tool's `carry`)
# what bench/gpu_dynamic_vram.py needs on the GPU machine, whose image has Python 3.12 and its own
# torch but none of ComfyUI 0.33's new packages, and which can fetch nothing:
#   .gpu/ComfyUI-<v>.tar.gz    the tree from ../shared/comfyui/
#   .gpu/whl/                  comfy-aimdo, torchsde, trampoline (wheels for CPython 3.12, x86-64)
#   .gpu/comfy_kitchen.tar.xz  comfy-kitchen's files without its AMD (HIP) library: the wheel alone is
#                              58 MB and the device tool carries 64 MiB with the working tree
#   .gpu/renders.safetensors   EmojiWorld's images, when `make emoji-data` has made them
# Then, on the device: scripts/gpu-check.sh, or scripts/emoji-gpu-train.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/comfyui-versions.sh
read -r version tarball < <(shared_comfyui_versions | tail -n 1) || { echo "no ComfyUI tarball in ../shared/comfyui"; exit 1; }
mkdir -p .gpu/whl
cp -u "$tarball" .gpu/
pin() { tar -xzOf "$tarball" ComfyUI/requirements.txt | grep -E "^$1==" ; }
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64
           --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
download() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d "$1" "${@:2}" 2>&1 | grep -v "is ignored: it is neither" || true
}
download .gpu/whl "$(pin comfy-aimdo)" torchsde==0.2.6 trampoline==0.1.2
if [ ! -f .gpu/comfy_kitchen.tar.xz ]; then
    rm -rf .gpu/tmp && mkdir -p .gpu/tmp/site
    download .gpu/tmp "$(pin comfy-kitchen)"
    python3 -m zipfile -e .gpu/tmp/comfy_kitchen-*.whl .gpu/tmp/site
    rm -f .gpu/tmp/site/comfy_kitchen/backends/hip/_C*.so
    tar -cf - -C .gpu/tmp/site . | xz -T2 -9 > .gpu/comfy_kitchen.tar.xz
    rm -rf .gpu/tmp
fi
# EmojiWorld's rendered images (35 MB) for scripts/emoji-gpu-train.sh, when make emoji-data made them
[ ! -f .cache/emojiworld/renders.safetensors ] || cp -u .cache/emojiworld/renders.safetensors .gpu/
du -sh .gpu
