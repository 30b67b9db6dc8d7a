#!/usr/bin/env bash
# Screenshot of the explorer widget rendered in JupyterLab by headless Chromium (see screenshot_explorer.py).
# Installs Debian's chromium with apt when it is missing; JupyterLab comes from the dev extras
# (pip install -e '.[dev]'). Arguments are passed on, e.g.:
#   tools/screenshot_explorer.sh docs/explorer.png --run cyclegan_demo/run --photos cyclegan_demo/test
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
    echo "chromium is missing: installing Debian's package with apt-get."
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq chromium
fi
python -c 'import jupyterlab' 2>/dev/null || { echo "JupyterLab is missing: pip install -e '.[dev]'" >&2; exit 1; }
exec python tools/screenshot_explorer.py "$@"
