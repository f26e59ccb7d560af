#!/usr/bin/env bash
# Installs what tests/browser needs beyond .venv, once: Debian's Chromium at /usr/bin/chromium.
# Playwright (the Python package) and the ComfyUI frontend come from requirements-test.txt;
# Playwright never downloads a browser of its own here (the tests launch /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
fi
/usr/bin/chromium --version 2>/dev/null
