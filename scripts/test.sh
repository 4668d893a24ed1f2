#!/usr/bin/env bash
# The whole test suite, on a fresh machine with Rust, Java 17, Maven and Python 3: starts
# the real Kafka broker (scripts/kafka.sh) and schema registry (scripts/registry.sh),
# creates the Python clients that write test messages (scripts/test-venv.sh), runs
# formatting and lint checks, every test, and stops the services again. This is the
# README's test command and what CI runs.
#
#   scripts/test.sh            everything
#   scripts/test.sh -- ARGS    extra arguments for `cargo test` (e.g. a test name filter)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

extra=()
if [ "${1:-}" = "--" ]; then shift; extra=("$@"); fi

step() { printf '\n==> %s\n' "$*"; }

# CI never skips the broker-backed tests.
if [ "${CI:-}" = "true" ]; then unset DRIFTSCOPE_SKIP_KAFKA_TESTS; fi

step "formatting and lints"
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings

step "building"
cargo build --all-targets --quiet

step "deploy files (compose schema, promtool, helm chart, kubeconform, config check)"
scripts/check-deploy.sh "${CARGO_TARGET_DIR:-target}/debug/driftscope"

if [ -z "${DRIFTSCOPE_SKIP_KAFKA_TESTS:-}" ]; then
  step "starting the Kafka broker"
  scripts/kafka.sh start
  trap 'scripts/kafka.sh stop >/dev/null 2>&1 || true' EXIT
  step "starting the schema registry (scripts/registry.sh: Apicurio Registry, in memory)"
  scripts/registry.sh start >/dev/null
  trap 'scripts/kafka.sh stop >/dev/null 2>&1 || true; scripts/registry.sh stop >/dev/null 2>&1 || true' EXIT
  DRIFTSCOPE_KAFKA_BOOTSTRAP="$(scripts/kafka.sh bootstrap)"
  DRIFTSCOPE_KAFKA_SASL_BOOTSTRAP="$(scripts/kafka.sh bootstrap --sasl)"
  DRIFTSCOPE_REGISTRY_URL="$(scripts/registry.sh url)"
  export DRIFTSCOPE_KAFKA_BOOTSTRAP DRIFTSCOPE_KAFKA_SASL_BOOTSTRAP DRIFTSCOPE_REGISTRY_URL
else
  step "DRIFTSCOPE_SKIP_KAFKA_TESTS is set: tests that need the broker are skipped"
fi

step "Python clients that write the tests' messages (scripts/test-venv.sh)"
DRIFTSCOPE_TEST_PYTHON="$(scripts/test-venv.sh)"
export DRIFTSCOPE_TEST_PYTHON

step "tests"
cargo test --all-targets "${extra[@]}"

step "dashboard in a real browser (headless Chromium)"
scripts/dashboard-test.sh "${CARGO_TARGET_DIR:-target}/debug/driftscope"

step "benchmark harness, quick mode (proves it runs; speed is reported, never asserted)"
scripts/bench.sh --quick
