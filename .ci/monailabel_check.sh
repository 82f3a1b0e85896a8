#!/usr/bin/env bash
# The bundle through MONAI Label's BundleInferTask (run by .ci/run before the tests).
#
# MONAI Label 0.8.5 pins numpy 1.26, so it gets its own virtual environment (never .venv):
#   $MONAILABEL_VENV, default /tmp/brainseg3d-monailabel-venv (outside the repo, nothing to ignore).
# First run: creates it and installs torch==2.13.0 FIRST (the local CPU wheel; an unpinned torch
# would pull a multi-GB CUDA build), then monailabel==0.8.5 with monai==1.6.1 (torch kept pinned).
# Takes a few minutes; later runs reuse the venv. Then runs tests/monailabel_infer_check.py.
#
# Exit status: 0 when the check passes or is skipped (a "SKIPPED: reason" line says why), 1 when
# a check fails.
#
#   bash .ci/monailabel_check.sh [--no-compare] [--case DIR] [--bundle DIR]
set -uo pipefail
cd "$(dirname "$0")/.."

VENV=${MONAILABEL_VENV:-/tmp/brainseg3d-monailabel-venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
LOG="$VENV/install.log"

skip() {
    echo "SKIPPED: $*"
    exit 0
}

pip_install() {  # pip_install ARGS... ; quiet, log kept in $LOG
    "$VENV/bin/python" -m pip install "$@" >>"$LOG" 2>&1
}

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    "$PY" -m venv "$VENV" || skip "cannot create a virtual environment at $VENV with $PY"
fi
: >>"$LOG" 2>/dev/null || LOG=/dev/null

if ! "$VENV/bin/python" -c "import monailabel" >/dev/null 2>&1; then
    echo "installing into $VENV (log: $LOG)"
    if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
        pip_install "torch==2.13.0" || skip "pip could not install torch==2.13.0: $(tail -n 3 "$LOG" | tr '\n' ' ')"
    fi
    pip_install "monailabel==0.8.5" "monai==1.6.1" "torch==2.13.0" \
        || skip "pip could not install monailabel==0.8.5 with monai==1.6.1 and torch==2.13.0: $(grep -E 'ERROR|error:' "$LOG" | tail -n 3 | tr '\n' ' ')"
fi

echo "resolved in $VENV:"
"$VENV/bin/python" -m pip list 2>/dev/null | grep -iE '^(monailabel|monai|torch|torchvision|numpy|nibabel|pytorch-ignite|itk) ' | sed 's/^/  /'

exec "$VENV/bin/python" tests/monailabel_infer_check.py "$@"
