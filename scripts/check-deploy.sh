#!/usr/bin/env bash
# Validates the deploy files without a Docker engine: docker-compose.yml against the
# Compose specification's JSON schema (check-jsonschema's vendored copy), the
# Prometheus config and alert rules with promtool (and their unit tests). Installs
# promtool (Debian's prometheus package) and check-jsonschema (PyPI, in a venv) when
# missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "installing promtool (Debian package prometheus)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

venv="${DRIFTSCOPE_TOOLS_VENV:-$HOME/.cache/driftscope/tools-venv}"
if [ ! -x "$venv/bin/check-jsonschema" ]; then
  echo "installing check-jsonschema into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q check-jsonschema
fi

echo "docker-compose.yml against the Compose specification schema"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml

echo "prometheus config and alert rules"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts_test.yml)

echo "grafana dashboard is valid JSON"
python3 -m json.tool deploy/grafana/dashboards/driftscope.json >/dev/null
