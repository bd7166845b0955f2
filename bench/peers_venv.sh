#!/usr/bin/env bash
# Separate venv for the mbrl-lib contender of bench/planner_peers.py (mbrl 0.2.0's pins -
# hydra-core 1.0.3, omegaconf 2.0, gymnasium 0.26.3 - clash with the main venv).
# Idempotent; usage: bash bench/peers_venv.sh   (creates .build/peers-venv, gitignored)
#
# Same interpreter (python3, as scripts/setup.sh) and the same torch build as the main venv, so
# the timed code runs on identical kernels. mbrl itself is installed with --no-deps and only
# what mbrl.models / mbrl.planning import is added (jupyter, tensorboard, ... are not needed).
# hydra-core 1.0.3 (mbrl's pin) cannot be imported on Python >= 3.11 ("mutable default ... for
# field override_dirname"), so hydra-core 1.3 / omegaconf 2.3 are used instead; hydra only
# builds the agent (bench.planner_peers passes _recursive_=False, the 1.0 behaviour), it is not
# on the timed path.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PEERS_VENV:-$ROOT/.build/peers-venv}"
PYTHON_BIN="${PYTHON:-python3}"
# torch==2.13.0 is the registry's CPU build; a looser spec would pull a CUDA build. On a GPU
# machine set PEERS_TORCH to the CUDA build the main venv uses.
TORCH_SPEC="${PEERS_TORCH:-torch==2.13.0}"

[ -x "$VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$VENV"
if ! "$VENV/bin/python" -c "import mbrl.planning, mbrl.models" >/dev/null 2>&1; then
  "$VENV/bin/pip" install -q --disable-pip-version-check "$TORCH_SPEC" numpy \
    "hydra-core>=1.3,<1.4" "omegaconf>=2.3,<2.4" "gymnasium==0.26.3" termcolor tqdm \
    2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "mbrl==0.2.0" \
    2>&1 | grep -v "^WARNING: Location" || true
fi
"$VENV/bin/python" -c "import mbrl.planning, torch, hydra; print('mbrl', mbrl.__version__, \
'torch', torch.__version__, 'hydra', hydra.__version__, 'at $VENV')"
