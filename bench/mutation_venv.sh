#!/usr/bin/env bash
# Separate venv for the mutation-testing tool of bench/mutation.py (cosmic-ray, pinned in
# requirements/dev-mutation.txt). Idempotent; usage: bash bench/mutation_venv.sh
# (creates .build/mutation-venv, gitignored; `python -m bench.mutation` calls it itself).
#
# The tool only mutates the source and starts the test command; the tests it starts run with the
# project's venv (.venv: rclpy, torch, ...), so nothing here touches that venv or its
# requirement hash in scripts/setup.sh, and the tool's own dependencies cannot clash with it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MUTATION_VENV:-$ROOT/.build/mutation-venv}"
PYTHON_BIN="${PYTHON:-python3}"
REQ="$ROOT/requirements/dev-mutation.txt"
STAMP="$VENV/.mbrl_requirements"
req_hash=$(sha256sum "$REQ" | cut -c1-16)

[ -x "$VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$VENV"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$req_hash" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" \
    2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import cosmic_ray" && echo "$req_hash" > "$STAMP"
fi
"$VENV/bin/cosmic-ray" --version >/dev/null
