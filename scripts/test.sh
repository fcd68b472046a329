#!/usr/bin/env bash
# Install everything the tests need on a fresh machine, then lint and run the whole suite.
#   bash scripts/test.sh                      # all tests
#   bash scripts/test.sh -k doctor            # arguments go to pytest
#   PYTHON=python3.12 bash scripts/test.sh    # another Python for a new .venv (3.11 to 3.13)
set -euo pipefail
cd "$(dirname "$0")/.."

# The browser test drives Debian's Chromium (never a downloaded browser); the lesson's Chinese
# screenshots need a CJK font (Debian's fonts-noto-cjk), or Chinese text renders as boxes.
if [ ! -x /usr/bin/chromium ] || ! fc-list :lang=zh | grep -q .; then
  sudo_if_needed=""
  [ "$(id -u)" = 0 ] || sudo_if_needed="sudo"
  $sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_if_needed apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
fi

VENV="${STEPWISE_VENV:-.venv}"
PYTHON="${PYTHON:-python3.11}"
if [ ! -x "$VENV/bin/python" ]; then
  if ! command -v "$PYTHON" >/dev/null; then
    echo "scripts/test.sh: $PYTHON is not installed. Install Python 3.11 (README, Set up), or name" \
      "another one: PYTHON=python3.12 bash scripts/test.sh" >&2
    exit 1
  fi
  if ! "$PYTHON" -m venv "$VENV"; then
    rm -rf "$VENV"
    echo "scripts/test.sh: '$PYTHON -m venv' failed. On Debian and Ubuntu, install the venv module:" \
      "sudo apt install $(basename "$PYTHON")-venv" >&2
    exit 1
  fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
exec "$VENV/bin/python" -m pytest "$@"
