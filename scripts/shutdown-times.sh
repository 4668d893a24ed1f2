#!/usr/bin/env bash
# scripts/shutdown-times.sh — how long `driftscope run` takes to stop on SIGTERM in each
# state (joining a group, broker down, trigger receiver down, checkpoint directory
# failing), with state.shutdown_timeout = 3s. It runs the fault tests of
# tests/fault_shutdown.rs, which assert the exit status and that nothing is lost, and
# prints the time each stop took: measured, never asserted (a busy machine stretches it).
#
# Needs the Kafka broker (scripts/kafka.sh start; DRIFTSCOPE_KAFKA_BOOTSTRAP honoured).
# The broker-down case starts and removes a broker instance of its own.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DRIFTSCOPE_KAFKA_BOOTSTRAP="${DRIFTSCOPE_KAFKA_BOOTSTRAP:-$(scripts/kafka.sh bootstrap)}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
cargo test --test fault_shutdown -- --nocapture --test-threads=1 >"$out" 2>&1 || {
  cat "$out" >&2
  echo "shutdown-times: a fault test failed" >&2
  exit 1
}
printf '%-24s %10s  %s\n' "state" "seconds" "exit"
grep -h '^shutdown-time ' "$out" | sed -E 's/^shutdown-time state=([^ ]+) seconds=([^ ]+) status=(.*)$/\1 \2 \3/' |
  while read -r state seconds status; do printf '%-24s %10s  %s\n' "$state" "$seconds" "$status"; done
