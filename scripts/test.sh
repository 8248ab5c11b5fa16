#!/usr/bin/env bash
# The test suite: set up, lint, then run every test. Fails on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
ruff format --check .
exec python -m pytest -q "$@"
