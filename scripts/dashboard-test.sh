#!/usr/bin/env bash
# The dashboard's real-browser test: starts `driftscope demo`, opens the dashboard in
# headless Chromium (playwright-core driving the system /usr/bin/chromium) and checks the
# charts, the drift state, the token form and the error states; screenshots go to
# artifacts/. Builds nothing: pass the binary to test (default target/debug/driftscope).
#
#   scripts/dashboard-test.sh [PATH_TO_DRIFTSCOPE]
#
# Installs what it needs on a fresh machine: Chromium from the Debian packages (when
# /usr/bin/chromium is missing; needs root) and the test's npm packages (`npm ci`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM_PATH:-}" ]; then
  echo "==> installing chromium (apt-get)"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq chromium >/dev/null
fi

if ! command -v node >/dev/null 2>&1; then
  echo "error: the dashboard test needs Node.js 20 or newer (node not found)" >&2
  exit 2
fi

if [ ! -d tests/dashboard/node_modules/playwright-core ]; then
  echo "==> installing the dashboard test's npm packages (npm ci)"
  (cd tests/dashboard && npm ci --no-audit --no-fund --loglevel=error)
fi

exec node tests/dashboard/dashboard.test.mjs "$@"
