#!/usr/bin/env bash
# The pytest part of `make test`: the whole suite (unit, node, e2e, browser) once per ComfyUI version,
# each in its own interpreter: 0.3.75 (.comfyui/ComfyUI, .venv), then every tree provision.sh unpacked
# from ../shared/comfyui/ (.comfyui/ComfyUI-<v>, .comfyui/venv-<v>). With COMFYUI_PATH set, only that
# checkout (FIA_TEST_PYTHON names its interpreter; default .venv). Ends with one pytest summary line
# per version; exits non-zero if any version failed. Extra arguments go to every pytest run.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/comfyui-versions.sh

targets=()  # "<ComfyUI tree> <python>"
if [ -n "${COMFYUI_PATH:-}" ]; then
    targets+=("$COMFYUI_PATH ${FIA_TEST_PYTHON:-.venv/bin/python}")
    echo "COMFYUI_PATH is set: testing only the ComfyUI at $COMFYUI_PATH"
else
    targets+=(".comfyui/ComfyUI .venv/bin/python")
    while read -r version _; do
        targets+=(".comfyui/ComfyUI-$version .comfyui/venv-$version/bin/python")
    done < <(shared_comfyui_versions)
    [ ${#targets[@]} -gt 1 ] || echo "no ComfyUI tarball in ../shared/comfyui: testing ComfyUI 0.3.75 only" \
        "(set COMFYUI_PATH to test your own checkout)"
fi

mkdir -p out/test
summaries=()
status=0
for target in "${targets[@]}"; do
    read -r tree python <<<"$target"
    version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$tree/comfyui_version.py")
    log=out/test/pytest-comfyui-$version.log
    echo "=== ComfyUI $version ($tree, $python) ==="
    start=$(date +%s)
    COMFYUI_PATH=$tree "$python" -m pytest -q "$@" 2>&1 | tee "$log"
    code=${PIPESTATUS[0]}
    [ "$code" -eq 0 ] || status=1
    summaries+=("ComfyUI $version: $(tail -n 1 "$log") [wall $(( $(date +%s) - start )) s, exit $code]")
done
echo
printf '%s\n' "${summaries[@]}"
exit $status
