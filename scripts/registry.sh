#!/usr/bin/env bash
# scripts/registry.sh — build and run a REAL schema registry (Apicurio Registry, in-memory
# storage) on this machine, for driftscope's Avro and Protobuf tests, CI and benchmarks.
# Clients use its Confluent-compatible API: `scripts/registry.sh url` prints the base URL
# (http://127.0.0.1:18081/apis/ccompat/v7), which is what confluent-kafka's
# SchemaRegistryClient and driftscope's `registry.url` take.
#
# Usage:
#   scripts/registry.sh start          build the server (first time only), start it in the
#                                      background, wait until the ccompat API answers; prints the
#                                      ccompat base URL. Idempotent.
#   scripts/registry.sh stop           SIGTERM, bounded wait, then SIGKILL. Exit 0 if not running.
#                                      Storage is in memory: every schema is gone after a stop.
#   scripts/registry.sh restart        stop + start (an empty registry).
#   scripts/registry.sh status         exit 0 = running and answering, 1 = stopped, 2 = running
#                                      but not answering.
#   scripts/registry.sh url [--root]   print the ccompat base URL (--root: http://HOST:PORT).
#   scripts/registry.sh logs [-f] [N]  last N (default 100) lines of the server log; -f follows.
#   scripts/registry.sh build          only build the server into the cache; prints its path.
#
# What runs: io.apicurio:apicurio-registry-app from Maven Central is the registry's Quarkus
# application as a library jar, not a runnable distribution. The first `start` (or `build`)
# runs the Quarkus Maven plugin's `build` goal over scripts/registry/pom.xml, which has no
# sources and depends on that artifact; the result is a Quarkus fast-jar
# (quarkus-app/quarkus-run.jar) cached in ~/.cache/driftscope/registry-<version>. Later starts
# only launch it. Storage is the app's in-memory default: each start begins empty.
#
# Version: 2.4.2.Final (Quarkus 2.16.4.Final, runs on Java 17), the newest whose whole
# dependency tree is on the Maven Central this project reaches. Newer ones are published as
# apicurio-registry-app but cannot be built here: 3.3.3 and 3.3.2 need modules that are not
# served (apicurio-registry-schema-util-provider, -schema-util-common, -contracts-rules,
# -config-index at 3.3.x), 3.0.9's parent pom io.apicurio:apicurio-registry:3.0.9 is not
# served, 2.6.13.Final needs apicurio-registry-schema-util-provider:2.6.13.Final and
# 2.5.11.Final apicurio-registry-utils-kafka:2.5.11.Final, neither served. scripts/registry/
# pom.xml works around 2.4.2.Final's two gaps (an everit-json-schema coordinate that lives
# on JitPack only, and the -deployment half of a small Quarkus extension); see its comments.
#
# Endpoints (bound to 127.0.0.1 only):
#   http://127.0.0.1:${DRIFTSCOPE_REGISTRY_PORT:-18081}/apis/ccompat/v7   Confluent-compatible API
#   .../apis/registry/v2                                                Apicurio's own API
#   .../health/ready                                                    Quarkus readiness
#
# Instances: by default this script manages THE registry above (the "main" instance). Setting
# DRIFTSCOPE_REGISTRY_INSTANCE=NAME (letters, digits, '-', '_'; "main" or empty = the main
# instance) selects a separate registry with its own data dir /tmp/driftscope-registry-NAME
# and its own port, picked on the first start from 18100-18399 (skipping ports in use and
# ports recorded by other instances, under the lock /tmp/driftscope-registry-ports.lock) and
# recorded in DATA_DIR/port, so `url` and `status` find it.
#
# Environment:
#   DRIFTSCOPE_REGISTRY_INSTANCE        which instance (see above; default: the main one)
#   DRIFTSCOPE_REGISTRY_VERSION         io.apicurio:apicurio-registry-app version (default 2.4.2.Final)
#   DRIFTSCOPE_REGISTRY_QUARKUS_VERSION Quarkus platform it was built with (default 2.16.4.Final; the
#                                       quarkus.version property of io.apicurio:apicurio-registry)
#   DRIFTSCOPE_REGISTRY_HOME            build cache (default ~/.cache/driftscope/registry-<version>)
#   DRIFTSCOPE_REGISTRY_DATA            pid file, server log (default /tmp/driftscope-registry)
#   DRIFTSCOPE_REGISTRY_PORT            HTTP port (default 18081 for the main instance)
#   DRIFTSCOPE_REGISTRY_HEAP_OPTS       default "-Xms64m -Xmx384m"
#   DRIFTSCOPE_REGISTRY_START_TIMEOUT   seconds to wait for the API to answer (default 90)
#   DRIFTSCOPE_REGISTRY_STOP_TIMEOUT    seconds to wait after SIGTERM before SIGKILL (default 20)
#   JAVA_HOME / DRIFTSCOPE_REGISTRY_JAVA  the java to use (Java 17+ required)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REGISTRY_SUPPORT_DIR="$SCRIPT_DIR/registry"

REGISTRY_VERSION="${DRIFTSCOPE_REGISTRY_VERSION:-2.4.2.Final}"
QUARKUS_VERSION="${DRIFTSCOPE_REGISTRY_QUARKUS_VERSION:-2.16.4.Final}"
REGISTRY_HOME="${DRIFTSCOPE_REGISTRY_HOME:-${HOME:-/root}/.cache/driftscope/registry-$REGISTRY_VERSION}"
INSTANCE="${DRIFTSCOPE_REGISTRY_INSTANCE:-}"
if [[ "$INSTANCE" == "main" ]]; then INSTANCE=""; fi
if [[ -n "$INSTANCE" && ! "$INSTANCE" =~ ^[A-Za-z0-9_-]+$ ]]; then
  printf 'registry.sh: error: DRIFTSCOPE_REGISTRY_INSTANCE may only hold letters, digits, - and _: %s\n' "$INSTANCE" >&2
  exit 1
fi
HOST="127.0.0.1"
if [[ -z "$INSTANCE" ]]; then
  DATA_DIR="${DRIFTSCOPE_REGISTRY_DATA:-/tmp/driftscope-registry}"
  PORT="${DRIFTSCOPE_REGISTRY_PORT:-18081}"
else
  DATA_DIR="${DRIFTSCOPE_REGISTRY_DATA:-/tmp/driftscope-registry-$INSTANCE}"
  # Filled from DATA_DIR/port (or picked by allocate_port on the first start).
  PORT="${DRIFTSCOPE_REGISTRY_PORT:-}"
fi
HEAP_OPTS="${DRIFTSCOPE_REGISTRY_HEAP_OPTS:--Xms64m -Xmx384m}"
START_TIMEOUT="${DRIFTSCOPE_REGISTRY_START_TIMEOUT:-90}"
STOP_TIMEOUT="${DRIFTSCOPE_REGISTRY_STOP_TIMEOUT:-20}"
CCOMPAT_PATH="/apis/ccompat/v7"

BUILD_DIR="$REGISTRY_HOME/build"
APP_DIR="$REGISTRY_HOME/quarkus-app"
APP_JAR="$APP_DIR/quarkus-run.jar"
APP_MARKER="$APP_DIR/.complete"
PID_FILE="$DATA_DIR/registry.pid"
SERVER_LOG="$DATA_DIR/registry.log"
LOCK_FILE="$DATA_DIR/.lock"
PORT_FILE="$DATA_DIR/port"
PORTS_LOCK_FILE="/tmp/driftscope-registry-ports.lock"
PORT_RANGE_FIRST=18100
PORT_RANGE_SIZE=300

# Messages, Java, ports, liveness, lock and log tail: shared with the other service script.
SERVICE_SCRIPT="registry.sh"
JAVA_OVERRIDE_VAR="DRIFTSCOPE_REGISTRY_JAVA"
JAVA_NEEDED_BY="Apicurio Registry $REGISTRY_VERSION (Quarkus $QUARKUS_VERSION)"
# shellcheck source=lib/java-service.sh
source "$SCRIPT_DIR/lib/java-service.sh"

# ---------------------------------------------------------------------------------------------
# port of a named instance

# Reads DATA_DIR/port into PORT unless the environment set it. Returns 1 when none is recorded.
load_port() {
  [[ -n "$INSTANCE" ]] || return 0
  [[ -n "$PORT" ]] && return 0
  [[ -s "$PORT_FILE" ]] || return 1
  PORT="$(tr -dc '0-9' <"$PORT_FILE")"
  [[ -n "$PORT" ]]
}

require_port() {
  load_port || die "instance '$INSTANCE' has no port yet ($PORT_FILE is missing): start it first"
}

# Picks a free port for a named instance and records it. Holds a machine-wide lock while
# choosing and skips ports recorded by other instances (running or not), so two instances
# never share a port even before either has bound it.
allocate_port() {
  load_port && return 0
  mkdir -p "$DATA_DIR"
  exec 8>>"$PORTS_LOCK_FILE"
  if command -v flock >/dev/null 2>&1; then
    flock -w 60 8 || die "another registry.sh is choosing a port (lock $PORTS_LOCK_FILE)"
  fi
  if load_port; then
    exec 8>&-
    return 0
  fi
  local reserved=" " f
  for f in /tmp/driftscope-registry-*/port; do
    [[ -f "$f" && "$f" != "$PORT_FILE" ]] || continue
    reserved+="$(tr -dc '0-9' <"$f") "
  done
  # Start at an offset derived from the name, so instances rarely probe the same ports.
  local start k p
  start=$(($(printf '%s' "$INSTANCE" | cksum | cut -d' ' -f1) % PORT_RANGE_SIZE))
  for ((k = 0; k < PORT_RANGE_SIZE; k++)); do
    p=$((PORT_RANGE_FIRST + (start + k) % PORT_RANGE_SIZE))
    if [[ "$reserved" != *" $p "* ]] && ! port_open "$p"; then
      PORT="$p"
      echo "$PORT" >"$PORT_FILE"
      exec 8>&-
      log "instance '$INSTANCE': port $PORT, recorded in $PORT_FILE"
      return 0
    fi
  done
  exec 8>&-
  die "no free port in $PORT_RANGE_FIRST-$((PORT_RANGE_FIRST + PORT_RANGE_SIZE - 1)) for instance '$INSTANCE'"
}

# ---------------------------------------------------------------------------------------------
# build

# Builds the Quarkus fast-jar once into REGISTRY_HOME/quarkus-app. The build runs in a scratch
# copy of the pom and only a complete result is moved into place, so an interrupted build
# leaves nothing that a later start would take for a finished one.
build_app() {
  if [[ -f "$APP_MARKER" && -f "$APP_JAR" ]]; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (needed once to build Apicurio Registry $REGISTRY_VERSION; 'apt-get install maven')"
  [[ -f "$REGISTRY_SUPPORT_DIR/pom.xml" ]] || die "missing $REGISTRY_SUPPORT_DIR/pom.xml"
  mkdir -p "$REGISTRY_HOME"
  exec 7>"$REGISTRY_HOME/.build.lock"
  if command -v flock >/dev/null 2>&1; then
    flock -w 900 7 || die "another registry.sh is building $REGISTRY_HOME (lock $REGISTRY_HOME/.build.lock)"
  fi
  if [[ -f "$APP_MARKER" && -f "$APP_JAR" ]]; then
    exec 7>&-
    return 0
  fi
  local mvn_log="$REGISTRY_HOME/mvn.log"
  rm -rf "$BUILD_DIR"
  mkdir -p "$BUILD_DIR"
  cp "$REGISTRY_SUPPORT_DIR/pom.xml" "$BUILD_DIR/pom.xml"
  # '%prod.quarkus.package.type' cannot be written in the pom (no '%' in an XML element name)
  # and must be profiled: the app's own application.properties sets the prod profile's
  # package type to legacy-jar, which beats an unprofiled setting.
  log "building Apicurio Registry $REGISTRY_VERSION (Quarkus $QUARKUS_VERSION) into $APP_DIR (one-time, via mvn; a few minutes)..."
  local start=$SECONDS
  if ! mvn -B -q -Dstyle.color=never -f "$BUILD_DIR/pom.xml" \
    -Dapicurio.version="$REGISTRY_VERSION" -Dquarkus.version="$QUARKUS_VERSION" \
    '-D%prod.quarkus.package.type=fast-jar' \
    package >"$mvn_log" 2>&1; then
    tail -n 30 "$mvn_log" >&2 || true
    local first_error
    first_error="$(grep -m1 '\[ERROR\]' "$mvn_log" | sed 's/.*\[ERROR\] *//' || true)"
    exec 7>&-
    die "mvn failed to build io.apicurio:apicurio-registry-app:$REGISTRY_VERSION: ${first_error:-see log} (full output: $mvn_log)"
  fi
  [[ -f "$BUILD_DIR/target/quarkus-app/quarkus-run.jar" ]] || {
    exec 7>&-
    die "mvn succeeded but target/quarkus-app/quarkus-run.jar is missing (see $mvn_log)"
  }
  rm -rf "$APP_DIR"
  mv "$BUILD_DIR/target/quarkus-app" "$APP_DIR"
  rm -rf "$BUILD_DIR"
  date -u +%Y-%m-%dT%H:%M:%SZ >"$APP_MARKER"
  exec 7>&-
  log "built $APP_JAR ($(du -sh "$APP_DIR" | cut -f1)) in $((SECONDS - start))s"
}

# ---------------------------------------------------------------------------------------------
# process state


# Prints the server pid if the pid file points at a live registry of this data dir.
registry_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  [[ -n "$pid" ]] || return 1
  alive "$pid" || return 1
  # Guard against pid reuse: the command line must be our server, tagged with our data dir.
  if [[ -r "/proc/$pid/cmdline" ]]; then
    local cmd
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    [[ "$cmd" == *quarkus-run.jar* && "$cmd" == *"-Ddriftscope.registry.data=$DATA_DIR "* ]] || return 1
  fi
  echo "$pid"
}

# True when GET <ccompat>/subjects answers 200 within $1 seconds (default 5): the storage is
# up and the Confluent-compatible API serves requests, which is what clients need.
registry_answers() {
  local limit="${1:-5}" code
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time "$limit" \
    "http://$HOST:$PORT$CCOMPAT_PATH/subjects" 2>/dev/null)" || return 1
  [[ "$code" == "200" ]]
}



# ---------------------------------------------------------------------------------------------
# commands

cmd_start() {
  command -v curl >/dev/null 2>&1 || die "curl not found (used to check that the registry answers)"
  if [[ -n "$INSTANCE" ]]; then allocate_port; fi
  check_port_number DRIFTSCOPE_REGISTRY_PORT "$PORT"
  find_java
  acquire_lock

  local pid
  if pid="$(registry_pid)"; then
    if registry_answers; then
      log "already running (pid $pid)"
      echo "http://$HOST:$PORT$CCOMPAT_PATH"
      return 0
    fi
    log "registry process $pid exists but is not answering yet; waiting"
  else
    rm -f "$PID_FILE"
    if port_open "$PORT"; then
      die "port $HOST:$PORT is already in use by another process (not the registry of $DATA_DIR); stop it or set DRIFTSCOPE_REGISTRY_PORT"
    fi
    build_app

    echo "===== $(date -u +%Y-%m-%dT%H:%M:%SZ) registry.sh start (Apicurio Registry $REGISTRY_VERSION) =====" >>"$SERVER_LOG"
    # 9>&- : the server must not inherit the lock fd. No setsid, as in kafka.sh: the server
    # stays in the caller's process group, so a CI job that kills its group also kills it.
    # -Ddriftscope.registry.data tags the command line for registry_pid's pid-reuse guard.
    # The UI and its config endpoint are not needed by tests (they only cost start-up time).
    # shellcheck disable=SC2086 # HEAP_OPTS is deliberately word-split
    nohup "$JAVA_BIN" $HEAP_OPTS -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError \
      -Djava.awt.headless=true \
      -Ddriftscope.registry.data="$DATA_DIR" \
      -Dquarkus.http.host="$HOST" -Dquarkus.http.port="$PORT" \
      -Dquarkus.log.console.color=false \
      -Djava.io.tmpdir="$DATA_DIR" \
      -jar "$APP_JAR" \
      </dev/null >>"$SERVER_LOG" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    log "started registry pid $pid (Apicurio Registry $REGISTRY_VERSION, in-memory storage, log $SERVER_LOG), waiting up to ${START_TIMEOUT}s..."
  fi

  local deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! alive "$pid"; then
      print_log_tail "$SERVER_LOG"
      rm -f "$PID_FILE"
      die "registry process $pid exited during startup (see $SERVER_LOG)"
    fi
    if port_open "$PORT" && registry_answers; then
      log "registry is up: http://$HOST:$PORT$CCOMPAT_PATH"
      echo "http://$HOST:$PORT$CCOMPAT_PATH"
      return 0
    fi
    sleep 0.5
  done
  print_log_tail "$SERVER_LOG"
  die "registry (pid $pid) did not answer on http://$HOST:$PORT$CCOMPAT_PATH within ${START_TIMEOUT}s; it is left running, use '$0 stop' to stop it"
}

cmd_stop() {
  if [[ ! -d "$DATA_DIR" ]]; then
    log "not running (no data dir $DATA_DIR)"
    return 0
  fi
  acquire_lock
  local pid
  if pid="$(registry_pid)"; then
    log "stopping registry pid $pid (SIGTERM, up to ${STOP_TIMEOUT}s)..."
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while alive "$pid" && ((SECONDS < deadline)); do
      sleep 0.2
    done
    if alive "$pid"; then
      log "registry pid $pid still alive after ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      local _
      for _ in $(seq 1 50); do
        alive "$pid" || break
        sleep 0.1
      done
    fi
    log "stopped"
  else
    log "not running"
  fi
  rm -f "$PID_FILE"
}

cmd_status() {
  local pid
  if ! pid="$(registry_pid)"; then
    echo "stopped (data dir $DATA_DIR)"
    return 1
  fi
  require_port
  if registry_answers 10; then
    echo "running pid=$pid version=$REGISTRY_VERSION url=http://$HOST:$PORT$CCOMPAT_PATH data=$DATA_DIR"
    return 0
  fi
  echo "running pid=$pid but NOT answering on http://$HOST:$PORT$CCOMPAT_PATH (starting, stopping or hung; see '$0 logs')"
  return 2
}

cmd_url() {
  require_port
  case "${1:-}" in
  --root) echo "http://$HOST:$PORT" ;;
  "") echo "http://$HOST:$PORT$CCOMPAT_PATH" ;;
  *) die "url: unknown option '$1'" ;;
  esac
}

cmd_logs() {
  local follow=0 n=100
  while (($#)); do
    case "$1" in
    -f | --follow) follow=1 ;;
    -n)
      n="$2"
      shift
      ;;
    [0-9]*) n="$1" ;;
    *) die "logs: unknown option '$1'" ;;
    esac
    shift
  done
  [[ -f "$SERVER_LOG" ]] || die "no registry log yet ($SERVER_LOG)"
  if ((follow)); then
    exec tail -n "$n" -F "$SERVER_LOG"
  fi
  tail -n "$n" "$SERVER_LOG"
}

usage() {
  sed -n '2,/^set -euo pipefail/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

main() {
  local cmd="${1:-}"
  (($#)) && shift
  case "$cmd" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart)
    cmd_stop
    cmd_start
    ;;
  status) cmd_status ;;
  url) cmd_url "$@" ;;
  logs | log) cmd_logs "$@" ;;
  build | fetch)
    find_java
    build_app
    echo "$APP_DIR"
    ;;
  -h | --help | help) usage ;;
  "")
    usage >&2
    exit 64
    ;;
  *)
    usage >&2
    die "unknown command '$cmd'"
    ;;
  esac
}

main "$@"
