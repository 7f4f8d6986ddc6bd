#!/usr/bin/env bash
# Sets up .venv if needed and runs the test suite. Extra arguments go to pytest.
# Test files run on RECSYS_TEST_WORKERS processes (default 2, the cores CI
# has; 0 runs them in this process), a whole file on one worker so the
# module-scoped pipeline run is made once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -n "${RECSYS_TEST_WORKERS:-2}" --dist loadfile "$@"
