#!/usr/bin/env bash
# Install what the web app's end-to-end test (tests/test_app.py) needs:
#   Debian's chromium + chromium-driver (apt-get) and, in .venv, streamlit, niivue-streamlit + selenium (pip).
# Idempotent (does nothing when all is there) and never fails CI: when something cannot be
# installed it says why and exits 0; the e2e test then skips with that reason.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

say() { echo "install_browser: $*" >&2; }

# --- Python side: streamlit + niivue-streamlit (the app) and selenium (the browser driver) ---
if [ -x "$PY" ]; then
    if ! "$PY" -c "import streamlit, selenium, niivue_component" >/dev/null 2>&1; then
        "$PY" -m pip install -q "streamlit>=1.45" "niivue-streamlit>=0.3" "selenium>=4.15" 2>&1 | grep -v "^WARNING: Location" >&2
        "$PY" -c "import streamlit, selenium, niivue_component" >/dev/null 2>&1 \
            || say "pip could not install streamlit/niivue-streamlit/selenium; the app tests that need them will be skipped"
    fi
else
    say "no $PY; run setup.sh first (the app e2e test will be skipped)"
fi

# --- the browser: Debian's chromium + chromium-driver ---
have_browser() {
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}
if have_browser; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    say "no apt-get on this machine: cannot install chromium + chromium-driver; the app e2e test will be skipped"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        say "not root and no password-less sudo: cannot apt-get install chromium; the app e2e test will be skipped"
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null 2>&1 || say "apt-get update failed (offline?); trying the cached package lists"
if ! $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1; then
    say "apt-get install chromium chromium-driver failed; the app e2e test will be skipped"
    exit 0
fi
# a font, so that screenshots show text (optional)
$SUDO apt-get install -y -qq --no-install-recommends fonts-dejavu-core >/dev/null 2>&1 || true
have_browser || say "chromium/chromedriver still not on PATH after apt-get; the app e2e test will be skipped"
exit 0
