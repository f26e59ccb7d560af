# Sourced by provision.sh and test.sh: the ComfyUI trees tested beside the vendored 0.3.75, one
# per tarball in ../shared/comfyui/ (ComfyUI-<version>-<commit>.tar.gz). Prints "<version> <tarball>",
# oldest version first (so the last line is the newest tree).
shared_comfyui_versions() {
    local tarball name
    for tarball in ../shared/comfyui/ComfyUI-*.tar.gz; do
        [ -f "$tarball" ] || continue
        name=$(basename "$tarball" .tar.gz)
        echo "$(echo "$name" | cut -d- -f2) $tarball"
    done | sort -V
}

# The newest web frontend on PyPI (comfyui-frontend-package), pinned. Users install it over their
# ComfyUI's own; the browser suite runs once more with it, served by the newest tree tested.
# provision.sh puts it in .comfyui/frontend-<version>/, a folder test.sh lays in front of the
# interpreter's packages (PYTHONPATH), so it shadows the tree's own frontend and nothing else.
NEWEST_FRONTEND=1.58.1

# The newest ComfyUI tree the tests have and its interpreter: "<tree> <python>".
newest_comfyui() {
    local version
    version=$(shared_comfyui_versions | tail -n 1 | cut -d' ' -f1)
    if [ -n "$version" ]; then
        echo ".comfyui/ComfyUI-$version .comfyui/venv-$version/bin/python"
    else
        echo ".comfyui/ComfyUI .venv/bin/python"
    fi
}
