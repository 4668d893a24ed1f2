# scripts/lib/java-service.sh — what scripts/kafka.sh and scripts/registry.sh share to run a
# Java service of their own on this machine: messages, finding Java 17+, port checks, process
# liveness, the per-data-dir lock and the log tail printed when a start fails. Sourced, not run.
#
# The sourcing script sets, before it calls these functions:
#   SERVICE_SCRIPT     its name in messages (kafka.sh, registry.sh)
#   JAVA_OVERRIDE_VAR  the environment variable that may name the java binary
#   JAVA_NEEDED_BY     what needs Java 17+, for the error message
#   HOST, DATA_DIR, LOCK_FILE

log() { printf '%s: %s\n' "$SERVICE_SCRIPT" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$SERVICE_SCRIPT" "$*" >&2
  exit 1
}

JAVA_BIN=""
# Sets JAVA_BIN: $JAVA_OVERRIDE_VAR, else $JAVA_HOME/bin/java, else java on the PATH; dies
# unless it is Java 17 or newer.
find_java() {
  if [[ -n "$JAVA_BIN" ]]; then return 0; fi
  local override="${!JAVA_OVERRIDE_VAR:-}"
  if [[ -n "$override" ]]; then
    JAVA_BIN="$override"
  elif [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
    JAVA_BIN="$JAVA_HOME/bin/java"
  elif command -v java >/dev/null 2>&1; then
    JAVA_BIN="$(command -v java)"
  else
    die "java not found (need Java 17+; install e.g. 'apt-get install openjdk-17-jre-headless' or set JAVA_HOME)"
  fi
  [[ -x "$JAVA_BIN" ]] || die "java not executable: $JAVA_BIN"
  local ver major
  ver="$("$JAVA_BIN" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
  major="${ver%%.*}"
  if [[ "$major" == "1" ]]; then major="$(echo "$ver" | cut -d. -f2)"; fi
  if ! [[ "$major" =~ ^[0-9]+$ ]] || ((major < 17)); then
    die "$JAVA_NEEDED_BY needs Java 17+, but $JAVA_BIN is version '${ver:-unknown}'"
  fi
}

# Dies unless $2 is a port number; $1 names the setting it came from.
check_port_number() {
  local name="$1" value="$2"
  if ! [[ "$value" =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
    die "$name is not a port number: '$value'"
  fi
}

# True when something accepts TCP connections on $HOST:$1.
port_open() {
  # shellcheck disable=SC2016 # $0/$1 are expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# True while process $1 exists and has not exited. A server that exits after its starter is
# gone (it was started with nohup ... & by an earlier run, so it is re-parented, and some
# container inits do not reap orphans) stays a zombie that `kill -0` still finds.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  # Field 3, after the parenthesised command name (which may contain spaces).
  stat="${stat##*) }"
  [[ "${stat%% *}" != "Z" ]]
}

# Holds $LOCK_FILE (fd 9) for the rest of the script, so two runs never manage one data dir.
acquire_lock() {
  mkdir -p "$DATA_DIR"
  exec 9>"$LOCK_FILE"
  if command -v flock >/dev/null 2>&1; then
    flock -w 180 9 || die "another $SERVICE_SCRIPT is busy with $DATA_DIR (lock $LOCK_FILE)"
  fi
}

# The last 60 lines of the log file $1, on stderr (after a failed start).
print_log_tail() {
  if [[ -f "$1" ]]; then
    echo "----- last 60 lines of $1 -----" >&2
    tail -n 60 "$1" >&2 || true
    echo "-----" >&2
  fi
}
