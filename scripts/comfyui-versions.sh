# Sourced by provision.sh and test.sh: the ComfyUI trees tested beside the vendored 0.3.75, one
# per tarball in ../shared/comfyui/ (ComfyUI-<version>-<commit>.tar.gz). Prints "<version> <tarball>".
shared_comfyui_versions() {
    local tarball name
    for tarball in ../shared/comfyui/ComfyUI-*.tar.gz; do
        [ -f "$tarball" ] || continue
        name=$(basename "$tarball" .tar.gz)
        echo "$(echo "$name" | cut -d- -f2) $tarball"
    done
}
