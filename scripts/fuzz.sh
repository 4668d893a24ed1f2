#!/usr/bin/env bash
# Coverage-guided fuzzing of driftscope's untrusted-input paths with libFuzzer
# (cargo-fuzz): the targets in fuzz/fuzz_targets/, their bodies in fuzz/src/lib.rs.
# The test command does not run this; it replays the committed corpus on stable Rust
# (tests/fuzz_corpus.rs). Run this to grow the corpus or to hunt for crashes.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]  fuzz each target (default: all) for SECONDS
#                                          (default 60), then minimise its corpus in
#                                          place (cargo fuzz cmin)
#   scripts/fuzz.sh --seed                 write fuzz/seeds/<target>/ from the repo's
#                                          valid inputs (stable Rust is enough)
#   scripts/fuzz.sh --check                say whether cargo-fuzz and a toolchain it
#                                          can use are here, and exit
#
# Needs: cargo-fuzz (`cargo install cargo-fuzz`, from crates.io, about 2 minutes) and
# a C++ compiler. cargo-fuzz builds with -Zsanitizer=address, a nightly flag: the
# nightly toolchain is used when rustup has it, otherwise stable with RUSTC_BOOTSTRAP=1
# (which accepts the flag; stable ships the AddressSanitizer runtime). FUZZ_TOOLCHAIN
# picks one; FUZZ_SANITIZER=none builds without the sanitizer (faster, no -Z flag).
# Build output goes to $CARGO_TARGET_DIR if set, else fuzz/target.
#
# A crash stops the run: the input is in fuzz/artifacts/<target>/. Fix it, copy the
# input to fuzz/regressions/<target>/ (replayed by the test command) and commit both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
  toolchain="$FUZZ_TOOLCHAIN"
elif rustup run nightly rustc --version >/dev/null 2>&1; then
  toolchain=nightly
else
  toolchain=stable
fi
sanitizer="${FUZZ_SANITIZER:-address}"

missing() {
  printf 'scripts/fuzz.sh: %s\n' "$@" >&2
  exit 2
}

check() {
  cargo fuzz --version >/dev/null 2>&1 ||
    missing "cargo-fuzz is not installed: cargo install cargo-fuzz (from crates.io, about 2 minutes)"
  rustup run "$toolchain" rustc --version >/dev/null 2>&1 ||
    missing "no '$toolchain' toolchain (rustup toolchain list)"
  c++ --version >/dev/null 2>&1 || missing "no C++ compiler (libfuzzer-sys compiles libFuzzer): apt-get install g++"
}

fuzz() {
  case "$toolchain" in
    nightly*) cargo "+$toolchain" fuzz "$@" ;;
    # -Zsanitizer is a nightly flag; RUSTC_BOOTSTRAP=1 makes stable rustc accept it.
    *) RUSTC_BOOTSTRAP=1 cargo "+$toolchain" fuzz "$@" ;;
  esac
}

case "${1:-}" in
  --check)
    check
    echo "cargo-fuzz $(cargo fuzz --version | awk '{print $2}'), $(rustup run "$toolchain" rustc --version), sanitizer $sanitizer: ready"
    exit 0
    ;;
  --seed)
    rm -rf fuzz/seeds
    cargo test --quiet --test fuzz_corpus -- --ignored --exact write_seed_corpus --nocapture
    exit 0
    ;;
esac

seconds="${1:-60}"
[ $# -gt 0 ] && shift
case "$seconds" in '' | *[!0-9]*) missing "SECONDS must be a number, got '$seconds'" ;; esac
check

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

if [ "$sanitizer" = address ]; then
  # The cc crate compiles C dependencies (zstd) with -fsanitize=address too, and
  # librdkafka's configure step links test programs against them: give it the runtime.
  export LDFLAGS="-fsanitize=address${LDFLAGS:+ $LDFLAGS}"
fi
printf '==> building %s (toolchain %s, sanitizer %s)\n' "${targets[*]}" "$toolchain" "$sanitizer"
fuzz build -O --sanitizer "$sanitizer" "${targets[@]}"

for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  extra=()
  # Seeds are read but not copied: libFuzzer writes new inputs to the first folder only.
  [ -d "fuzz/seeds/$target" ] && extra+=("fuzz/seeds/$target")
  # 4 GB: AddressSanitizer's quarantine plus the arrow stream reader's (bounded, 64 MB)
  # body preallocation for a message that declares a large body pass the default 2 GB.
  flags=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1)
  [ -f "fuzz/dicts/$target.dict" ] && flags+=(-dict="fuzz/dicts/$target.dict")
  printf '\n==> fuzzing %s for %ss (%s files in %s)\n' "$target" "$seconds" "$(ls "$corpus" | wc -l)" "$corpus"
  fuzz run -O --sanitizer "$sanitizer" "$target" "$corpus" "${extra[@]}" -- "${flags[@]}"
  printf '\n==> minimising %s\n' "$corpus"
  # Edges only (-use_counters=0), not hit counts: a corpus a fraction of the size.
  fuzz cmin -O --sanitizer "$sanitizer" "$target" "$corpus" -- -rss_limit_mb=4096 -max_len=65536 -use_counters=0
  printf '%s: %s files, %s\n' "$corpus" "$(ls "$corpus" | wc -l)" "$(du -sh "$corpus" | cut -f1)"
done
