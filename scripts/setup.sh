#!/usr/bin/env bash
# Create .venv and install kt-tutor with its dev tools. Idempotent.
# torch==2.13.0 is installed first: it is the CPU wheel this project is developed against,
# and installing it before the project keeps pip from pulling a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" \
    2>/dev/null || python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e ".[dev]"
# the dashboard's charting library (Vega-Lite, from npm; committed): re-vendored only when
# missing or at other versions than the pinned ones
bash scripts/vendor_dashboard.sh \
    || echo "warning: the dashboard's charting library could not be vendored (needs npm):" \
        "/dashboard answers 503 and its browser test skips" >&2
