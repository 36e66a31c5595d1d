#!/usr/bin/env bash
# Idempotent set-up for a fresh machine with only Python and pip: system libraries for Qt/OpenGL
# under Xvfb (when root and missing), a virtual environment in .venv, the project and its extras.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"

APT_PKGS="libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon0 \
libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-render-util0 \
libxcb-shape0 libxcb-xkb1 xvfb xauth"
missing=""
if command -v dpkg-query >/dev/null 2>&1; then
  for p in $APT_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
  done
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing system packages:$missing"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "[setup] warning: missing system packages:$missing (install them with apt-get as root)" >&2
  fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating virtual environment .venv"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=".venv/.installed${EXTRAS:+-$EXTRAS}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VPY" -m pip install -q --upgrade pip
  if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing PyTorch (${NSV_TORCH_SPEC:-torch==2.13.0})"
    "$VPY" -m pip install -q "${NSV_TORCH_SPEC:-torch==2.13.0}"
  fi
  echo "[setup] installing the project${EXTRAS:+ with [$EXTRAS]}"
  "$VPY" -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$stamp"
fi
