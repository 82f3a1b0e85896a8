#!/usr/bin/env bash
# Set up brainseg3d in ./.venv (Python 3.11): CPU torch 2.13.0 unless a torch is already there,
# then the package. `bash setup.sh test` adds what the tests need: the test and web extras and
# (for the web app's browser test) Debian's chromium + chromium-driver. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-}" in
    ""|test) ;;
    *) echo "usage: bash setup.sh [test]   (unknown argument: $1)" >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "usage: bash setup.sh [test]   (one argument at most)" >&2; exit 2; }
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    # pinned: an unpinned torch pulls a multi-GB CUDA build
    if ! .venv/bin/python -m pip install -q "torch==2.13.0" >.venv/torch.log 2>&1; then
        cat .venv/torch.log >&2
        echo "setup.sh: installing torch 2.13.0 failed (log above, also in .venv/torch.log)" >&2
        exit 1
    fi
fi
EXTRAS=""
[ "${1:-}" = "test" ] && EXTRAS="[test,web]"
# the build backend's notes on an editable install go to a log; on failure it is shown
if ! .venv/bin/python -m pip install -q -e ".$EXTRAS" >.venv/setup.log 2>&1; then
    cat .venv/setup.log >&2
    echo "setup.sh: installing brainseg3d failed (log above, also in .venv/setup.log)" >&2
    exit 1
fi
[ "${1:-}" = "test" ] && bash .ci/install_browser.sh
.venv/bin/python -c "import torch, monai, brainseg3d; print(f'brainseg3d {brainseg3d.__version__}: torch {torch.__version__}, monai {monai.__version__}')"
