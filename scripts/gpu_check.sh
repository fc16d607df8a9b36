#!/usr/bin/env bash
# Check a GPU machine: every GPU-specific path of flatmin, with figures (README, "Checking a GPU machine").
#
#   scripts/gpu_check.sh [OUT_DIR]                    # make gpu-check; OUT_DIR defaults to outputs/gpu_check/<stamp>
#   DEVICE=cpu QUICK=1 scripts/gpu_check.sh OUT_DIR   # the CPU smoke mode CI runs (make test-ci-slow)
#
# Environment: PYTHON (python3), DEVICE (cuda), QUICK (0), BUDGET_S (450 seconds for all sections),
# SECTIONS (a space-separated subset, e.g. "optimizers compile"; default: all).
# It runs from the source tree (PYTHONPATH is set here), so flatmin need not be installed. On an image
# without Hydra and omegaconf, `make wheels` beforehand puts them (and pytorch_optimizer, for the peer
# comparison) in .wheels/; they are installed into a temporary folder for this check only.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/outputs/gpu_check/$(date +%Y%m%d_%H%M%S)}"
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "$ROOT/.wheels/*.whl" > /dev/null; then
    SITE="$(mktemp -d)"
    trap 'rm -rf "$SITE"' EXIT
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --target "$SITE" "$ROOT"/.wheels/*.whl
    export PYTHONPATH="$PYTHONPATH:$SITE"
fi
if ! "$PYTHON" -c "import hydra, omegaconf" 2> /dev/null; then
    echo "gpu_check: Hydra and omegaconf are not importable; install flatmin (make install) or run make wheels first." >&2
    exit 2
fi
cd "$ROOT"
"$PYTHON" scripts/gpu_check.py --out "$OUT"
