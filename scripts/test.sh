#!/usr/bin/env bash
# The pytest part of `make test`: the whole suite (unit, node, e2e, browser) once per ComfyUI version,
# each in its own interpreter: 0.3.75 (.comfyui/ComfyUI, .venv), then every tree provision.sh unpacked
# from ../shared/comfyui/ (.comfyui/ComfyUI-<v>, .comfyui/venv-<v>). With COMFYUI_PATH set, only that
# checkout (FIA_TEST_PYTHON names its interpreter; default .venv). Ends with one pytest summary line
# per version; exits non-zero if any version failed. Extra arguments go to every pytest run.
# Then the browser suite alone once more, on the newest frontend from PyPI (NEWEST_FRONTEND, provisioned in
# .comfyui/frontend-<v>/ and laid in front of the interpreter's own through PYTHONPATH), served by the
# last (newest) tree above: what users run today, for about a minute more.
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
# run <tree> <python> <what> <log name> [pytest arguments]: one pytest run, its summary line kept
run() {
    local tree=$1 python=$2 what=$3 name=$4 version frontend log start code wall
    shift 4
    version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$tree/comfyui_version.py")
    frontend=$("$python" -c "import importlib.metadata as m; print(m.version('comfyui-frontend-package'))" \
        2>/dev/null || echo none)
    log=out/test/pytest-$name-$version.log
    echo "=== ComfyUI $version, frontend $frontend, $what ($tree, $python) ==="
    start=$(date +%s)
    COMFYUI_PATH=$tree "$python" -m pytest -q "$@" 2>&1 | tee "$log"
    code=${PIPESTATUS[0]}
    [ "$code" -eq 0 ] || status=1
    wall=$(( $(date +%s) - start ))
    summaries+=("ComfyUI $version, frontend $frontend, $what: $(tail -n 1 "$log") [wall $wall s, exit $code]")
}
for target in "${targets[@]}"; do
    read -r tree python <<<"$target"
    run "$tree" "$python" "${*:-whole suite}" comfyui "$@"
done

newest_frontend=$PWD/.comfyui/frontend-$NEWEST_FRONTEND
if [ -f "$newest_frontend/.provisioned" ]; then
    read -r tree python <<<"${targets[-1]}"
    PYTHONPATH=$newest_frontend${PYTHONPATH:+:$PYTHONPATH} run "$tree" "$python" "browser suite" \
        "frontend-$NEWEST_FRONTEND-comfyui" tests/browser "$@"
else
    echo "no $newest_frontend: run scripts/provision.sh to test the browser suite on frontend $NEWEST_FRONTEND"
    status=1
fi
echo
printf '%s\n' "${summaries[@]}"
exit $status
