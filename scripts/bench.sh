#!/usr/bin/env bash
# scripts/bench.sh — driftscope's benchmark harness (benches/harness.rs): builds the
# release binary and the harness, starts the real Kafka broker (scripts/kafka.sh) for
# the end-to-end stage, and prints one table of figures, ratios and PASS/MISS against
# the targets.
#
#   scripts/bench.sh                 full run: in-process, end-to-end (2,000,000 messages),
#                                    scoring, memory (1M and 10M records)
#   scripts/bench.sh --quick         short run, no broker needed (end-to-end skipped)
#   scripts/bench.sh -- ARGS         extra harness options, e.g.
#                                    -- --messages 500000 --stages e2e,memory
#   scripts/bench.sh -- --stages offline --evidently
#                                    the offline stage side by side with Evidently's
#                                    DataDriftPreset: --evidently makes (once) a virtual
#                                    environment with Evidently in $target/evidently-venv
#                                    (pip; takes minutes) and passes its Python on
#
# Environment: CARGO_TARGET_DIR is honoured; DRIFTSCOPE_KAFKA_BOOTSTRAP overrides the
# broker address; DRIFTSCOPE_BENCH_KEEP_BROKER=1 leaves a broker this script started
# running (one that was already running is always left running).
# Exit status: non-zero when a stage could not run (a MISS does not fail the run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=0
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; args+=(--quick) ;;
    --) shift; args+=("$@"); break ;;
    *) args+=("$1") ;;
  esac
  shift
done

step() { printf '==> %s\n' "$*" >&2; }
target="${CARGO_TARGET_DIR:-target}"

# --evidently: a Python with Evidently for the offline stage, made only when asked.
harness_args=()
needs_broker=1
prev=""
for a in "${args[@]}"; do
  if [ "$a" = "--evidently" ]; then
    venv="$target/evidently-venv"
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import evidently.legacy.tests, pyarrow' 2>/dev/null; then
      step "making $venv with Evidently (pip install evidently pyarrow 'pandas<3'; takes minutes)"
      python3 -m venv "$venv"
      # Evidently 0.7 imports a pandas internal that pandas 3 removed.
      "$venv/bin/pip" install --quiet evidently pyarrow 'pandas<3'
    fi
    harness_args+=(--evidently-python "$venv/bin/python")
  else
    harness_args+=("$a")
  fi
  # Stages named without e2e need no broker.
  if [ "$prev" = "--stages" ] && [[ ",$a," != *",e2e,"* ]]; then
    needs_broker=0
  fi
  prev="$a"
done
args=("${harness_args[@]}")

step "building the release binary and the harness"
cargo build --release --bin driftscope --quiet
cargo bench --bench harness --no-run --quiet

if [ "$quick" = 0 ] && [ "$needs_broker" = 1 ]; then
  if scripts/kafka.sh status >/dev/null 2>&1; then
    step "using the running Kafka broker"
  else
    step "starting the Kafka broker"
    scripts/kafka.sh start >/dev/null
    if [ -z "${DRIFTSCOPE_BENCH_KEEP_BROKER:-}" ]; then
      trap 'scripts/kafka.sh stop >/dev/null 2>&1 || true' EXIT
    fi
  fi
  DRIFTSCOPE_KAFKA_BOOTSTRAP="${DRIFTSCOPE_KAFKA_BOOTSTRAP:-$(scripts/kafka.sh bootstrap)}"
  export DRIFTSCOPE_KAFKA_BOOTSTRAP
  # The broker was started for this run: not reaching it is a failure, not a skip.
  args+=(--require-broker)
fi

step "running the harness"
cargo bench --bench harness --quiet -- --driftscope "$target/release/driftscope" "${args[@]}"
