#!/usr/bin/env bash
# The test suite: set up, lint, then run every test. Fails on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the dashboard's browser test drives Debian's Chromium and its driver: installed when missing
# (quietly, where apt-get can run); without them that test skips with the reason
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    if command -v apt-get >/dev/null 2>&1 && { [ -z "$SUDO" ] || sudo -n true 2>/dev/null; }; then
        { $SUDO apt-get update -qq \
            && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
                chromium-driver >/dev/null; } \
            || echo "warning: could not install chromium; the browser test will skip" >&2
    else
        echo "note: no chromium/chromedriver and no apt-get: the browser test will skip" >&2
    fi
fi
. .venv/bin/activate
ruff check .
ruff format --check .
exec python -m pytest -q "$@"
