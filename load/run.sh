#!/usr/bin/env bash
# `make load`: the load harness (see load/README.md). Arguments go to load/harness.py, e.g.
#   load/run.sh --quick            load/run.sh --only gateway,bare --rounds 1
#   load/run.sh --soak 300         load/run.sh --profile 15
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
exec "$python" -m load.harness "$@"
