#!/usr/bin/env bash
# Creates or updates ./.venv from the pinned lock file. Sourced by scripts/serve and
# scripts/test so a fresh clone needs nothing but Python 3.11+.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      PY="$cand"; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "aibridge needs Python 3.11 or newer on PATH (or set PYTHON=/path/to/python3.11)." >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating virtual environment in .venv …" >&2
  "$PY" -m venv "$VENV"
fi
# Reinstall only when the dependency inputs changed.
want="$(cat "$ROOT/pyproject.toml" "$ROOT/requirements.lock" | "$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
have="$(cat "$VENV/.aibridge-stamp" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  echo "Installing pinned dependencies into .venv (first run takes a minute) …" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$ROOT/requirements.lock" -e "$ROOT[dev]"
  echo "$want" > "$VENV/.aibridge-stamp"
fi
export PATH="$VENV/bin:$PATH"
