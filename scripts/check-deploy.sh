#!/usr/bin/env bash
# Validates the deploy files without a Docker engine or a cluster:
#   * docker-compose.yml against the Compose specification's JSON schema
#     (check-jsonschema's vendored copy);
#   * the Prometheus config and alert rules with promtool (and their unit tests);
#   * the Helm chart (deploy/helm/driftscope) with `helm lint` and `helm template` over the
#     default values and every examples/*.yaml, and the sidecar manifests (deploy/k8s):
#     every rendered object validated by kubeconform against the JSON schemas of pinned
#     Kubernetes versions, every rendered driftscope.toml by `driftscope config check`,
#     every rendered PrometheusRule by `promtool check rules`.
#
#   scripts/check-deploy.sh [DRIFTSCOPE_BINARY]     (default target/debug/driftscope)
#
# Installs what is missing and caches it under ~/.cache/driftscope (DRIFTSCOPE_CACHE):
# promtool (Debian's prometheus package); check-jsonschema and kubernetes-validate
# (PyPI, in a venv; the latter ships Kubernetes' JSON schemas, which kubeconform reads
# from a local directory, since it cannot download them here); helm and kubeconform
# (`go install` from the Go module proxy, into versioned file names, so a version bump
# reinstalls). The first run takes about 4.5 minutes (building helm), later ones about
# 4 s.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

HELM_VERSION=v4.3.2
KUBECONFORM_VERSION=v0.8.0
KUBERNETES_VALIDATE_VERSION=1.37.0
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and a current one.
KUBERNETES_VERSIONS=(1.27.0 1.35.0)

binary="${1:-${CARGO_TARGET_DIR:-target}/debug/driftscope}"
cache="${DRIFTSCOPE_CACHE:-$HOME/.cache/driftscope}"
mkdir -p "$cache/bin"

if ! command -v promtool >/dev/null 2>&1; then
  echo "installing promtool (Debian package prometheus)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

venv="${DRIFTSCOPE_TOOLS_VENV:-$cache/tools-venv}"
if [ ! -x "$venv/bin/check-jsonschema" ]; then
  echo "installing check-jsonschema into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q check-jsonschema
fi
if [ "$("$venv/bin/python" -c 'import kubernetes_validate.version as v; print(v.__version__)' 2>/dev/null)" \
  != "$KUBERNETES_VALIDATE_VERSION" ]; then
  echo "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (Kubernetes JSON schemas) into $venv"
  "$venv/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

# go_tool NAME MODULE/PATH VERSION: the binary's path, built once.
go_tool() {
  local dest="$cache/bin/$1-$3"
  if [ ! -x "$dest" ]; then
    command -v go >/dev/null 2>&1 || { echo "Go is needed to install $1 (go install $2@$3)" >&2; exit 1; }
    echo "installing $1 $3 (go install $2@$3)" >&2
    local tmp
    tmp="$(mktemp -d)"
    GOBIN="$tmp" GOMODCACHE="$tmp/mod" GOCACHE="$tmp/build" GOFLAGS=-modcacherw \
      go install "$2@$3" >&2
    mv "$tmp/$1" "$dest"
    # Only the binary is kept: helm's module sources (~600 MiB) and build cache
    # (~1 GiB) serve no later run.
    rm -rf "$tmp"
  fi
  echo "$dest"
}
helm="$(go_tool helm helm.sh/helm/v4/cmd/helm "$HELM_VERSION")"
kubeconform="$(go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION")"

# kubernetes-validate's schemas carry an "$id" on kubernetes.io and refer to their shared
# definitions by "/api/_definitions.json", which would send kubeconform to the network.
# The copy kubeconform reads has no "$id" and refers to the definitions file beside it,
# laid out as kubeconform's location template expects:
# v<version>-standalone-strict/<kind>-<group>-<version>.json.
schemas="$cache/k8s-schemas/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
for version in "${KUBERNETES_VERSIONS[@]}"; do
  dir="$schemas/v$version-standalone-strict"
  if [ ! -f "$dir/.complete" ]; then
    echo "preparing Kubernetes $version JSON schemas for kubeconform in $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    "$venv/bin/python" - "$version" "$dir" <<'PY'
import json, os, sys
import kubernetes_validate
version, dest = sys.argv[1], sys.argv[2]
src = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema", f"v{version}-local-strict")
for name in os.listdir(src):
    with open(os.path.join(src, name)) as f:
        text = f.read()
    schema = json.loads(text.replace('"/api/_definitions.json#', '"_definitions.json#'))
    schema.pop("$id", None)
    with open(os.path.join(dest, name), "w") as f:
        json.dump(schema, f)
PY
    touch "$dir/.complete"
  fi
done

echo "docker-compose.yml against the Compose specification schema"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml

echo "prometheus config and alert rules"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts_test.yml)

echo "grafana dashboard is valid JSON"
python3 -m json.tool deploy/grafana/dashboards/driftscope.json >/dev/null

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# validate NAME MANIFESTS [EXPECT_REFUSED_CONFIG]: kubeconform over the manifests, then
# each driftscope config in them through `driftscope config check` (with the
# environment the pod gives it) and each PrometheusRule through promtool. A config the
# third argument names must be refused, with that text in the error.
validate() {
  local name="$1" manifests="$2" refused="${3:-}"
  for version in "${KUBERNETES_VERSIONS[@]}"; do
    echo "$name: kubeconform, Kubernetes $version"
    # The prometheus-operator kinds have no schema here (CRDs); their content is
    # checked below (promtool) and by tests/deploy_files.rs.
    "$kubeconform" -strict -summary -kubernetes-version "$version" \
      -schema-location "$schemas/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      -skip ServiceMonitor,PrometheusRule "$manifests"
  done
  mkdir -p "$out/$name"
  "$venv/bin/python" scripts/k8s-extract.py "$manifests" "$out/$name" >"$out/$name.files"
  while read -r file; do
    case "$file" in
      *.rules.yml)
        promtool check rules "$file"
        ;;
      *.toml)
        local env=()
        mapfile -t env <"$file.env"
        if [ -n "$refused" ]; then
          if env "${env[@]}" "$binary" config check --config "$file" >"$out/check.log" 2>&1; then
            echo "$name: $file passed config check, but should be refused ($refused): update the example" >&2
            exit 1
          fi
          grep -qF -- "$refused" "$out/check.log" || { cat "$out/check.log" >&2; exit 1; }
          echo "$name: config refused as expected ($refused)"
        else
          env "${env[@]}" "$binary" config check --config "$file" >/dev/null
        fi
        ;;
    esac
  done <"$out/$name.files"
}

chart=deploy/helm/driftscope
echo "helm chart: lint, template, kubeconform, config check, promtool (helm $HELM_VERSION, kubeconform $KUBECONFORM_VERSION, Kubernetes ${KUBERNETES_VERSIONS[*]})"
echo "default values: helm lint, helm template"
"$helm" lint --strict "$chart"
# The optional objects on, so they are rendered and checked too.
optional=(--set serviceMonitor.enabled=true --set prometheusRule.enabled=true)
"$helm" template driftscope "$chart" "${optional[@]}" >"$out/default.yaml"
validate default "$out/default.yaml"
for values in "$chart"/examples/*.yaml; do
  example="$(basename "$values" .yaml)"
  echo "$example: helm lint, helm template"
  "$helm" lint --strict "$chart" --values "$values"
  "$helm" template driftscope "$chart" --values "$values" "${optional[@]}" >"$out/$example.yaml"
  # An example whose format driftscope does not read yet names it in its first line:
  # "# pending: <text of the refusal>".
  pending="$(sed -n '1s/^# pending: //p' "$values")"
  validate "$example" "$out/$example.yaml" "$pending"
done

# The chart refuses a config that does not match the values it must agree with.
for mismatch in persistence.mountPath=/data httpPort=8080; do
  if "$helm" template driftscope "$chart" --set "$mismatch" >/dev/null 2>"$out/refused.log"; then
    echo "helm template accepted --set $mismatch, which the default config does not match" >&2
    exit 1
  fi
  grep -q "config: " "$out/refused.log" || { cat "$out/refused.log" >&2; exit 1; }
done
echo "chart refuses a config that does not match persistence.mountPath or httpPort"

echo "sidecar manifests (deploy/k8s)"
for manifests in deploy/k8s/*.yaml; do
  validate "k8s-$(basename "$manifests" .yaml)" "$manifests"
done
