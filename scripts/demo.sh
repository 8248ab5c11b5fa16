#!/usr/bin/env bash
# The main job: set up, then run the demo on the bundled sample data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec tutor demo "$@"
