#!/usr/bin/env bash
# scripts/test-venv.sh — the Python virtual environment the tests use to write test
# messages with real client libraries (scripts/python/requirements.txt). Created on first
# use in ~/.cache/driftscope/test-venv-<digest of the requirements>, so a change of the
# requirements makes a new one and an unchanged one is reused. Prints the venv's python.
#
#   scripts/test-venv.sh      create if needed; print the interpreter's path
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

requirements=scripts/python/requirements.txt
digest="$(sha256sum "$requirements" | cut -c1-12)"
venv="${DRIFTSCOPE_CACHE:-$HOME/.cache/driftscope}/test-venv-$digest"

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "test-venv: creating $venv (once per requirements change)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
