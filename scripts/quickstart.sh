#!/usr/bin/env bash
# Sets up .venv and runs the whole pipeline on built-in synthetic logs.
# Extra arguments go to recsys-pipeline (see `recsys-pipeline --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/recsys-pipeline "$@"
