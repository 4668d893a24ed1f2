#!/usr/bin/env bash
# scripts/kafka.sh — install and run a REAL single-node Apache Kafka broker (KRaft,
# combined broker+controller) on this machine, for driftscope's tests, CI and benchmarks.
#
# Usage:
#   scripts/kafka.sh start            download jars (first time only), format (first time only),
#                                     start in the background, wait until it answers; prints the
#                                     PLAINTEXT bootstrap address. Idempotent.
#   scripts/kafka.sh stop [--wipe]    SIGTERM, bounded wait, then SIGKILL. Exit 0 if not running.
#                                     --wipe also deletes the data dir (topics, offsets, logs).
#   scripts/kafka.sh kill             SIGKILL at once (a crash, for fault tests); keeps the data,
#                                     so a later `start` recovers the same cluster. Exit 0 if not
#                                     running.
#   scripts/kafka.sh clean            same as `stop --wipe`.
#   scripts/kafka.sh restart          stop (keeping data) + start.
#   scripts/kafka.sh status           exit 0 = running and answering, 1 = stopped, 2 = running
#                                     but not answering.
#   scripts/kafka.sh logs [-f] [N]    last N (default 100) lines of the broker log; -f follows.
#   scripts/kafka.sh bootstrap [--sasl]   print the PLAINTEXT (or SASL_PLAINTEXT) bootstrap address.
#   scripts/kafka.sh client-config    print the path of a client .properties file for the SASL
#                                     listener (security.protocol, sasl.mechanism, jaas config).
#   scripts/kafka.sh run-class CLASS [ARGS...]
#                                     run a class from the broker's jars, e.g.
#                                     org.apache.kafka.tools.TopicCommand, org.apache.kafka.tools.ConsoleProducer,
#                                     org.apache.kafka.tools.consumer.ConsoleConsumer.
#   scripts/kafka.sh fetch            only download the jars into the cache.
#
# Endpoints (all bound to 127.0.0.1 only):
#   PLAINTEXT        127.0.0.1:${DRIFTSCOPE_KAFKA_PORT:-19092}       no auth
#   SASL_PLAINTEXT   127.0.0.1:${DRIFTSCOPE_KAFKA_SASL_PORT:-19094}  mechanism PLAIN,
#                    user "driftscope", password "driftscope-secret"
#   CONTROLLER       127.0.0.1:${DRIFTSCOPE_KAFKA_CONTROLLER_PORT:-19093}  KRaft quorum only, not for clients
#
# Instances: by default this script manages THE broker above (the "main" instance). Setting
# DRIFTSCOPE_KAFKA_INSTANCE=NAME (letters, digits, '-', '_'; "main" or empty = the main instance)
# selects a separate broker with everything of its own, so fault tests can stop and start it
# without disturbing the main broker other tests use:
#   data dir     /tmp/driftscope-kafka-NAME (server.properties, KRaft logs, cluster.id, broker.log,
#                kafka.pid, lock); kept across stop/start/kill, so topics and committed offsets
#                survive a restart under the same cluster id
#   ports        three free ports (PLAINTEXT, CONTROLLER, SASL_PLAINTEXT) picked on the first start
#                from 19200-20099, skipping ports in use and ports recorded by other instances
#                (under the lock /tmp/driftscope-kafka-ports.lock), and recorded in
#                DATA_DIR/ports so every later start, `bootstrap` and `status` use the same ones;
#                `clean` deletes the data dir and so releases them
# Every command works per instance, e.g.
#   DRIFTSCOPE_KAFKA_INSTANCE=faults scripts/kafka.sh start      (prints its bootstrap address)
#   DRIFTSCOPE_KAFKA_INSTANCE=faults scripts/kafka.sh kill
#   DRIFTSCOPE_KAFKA_INSTANCE=faults scripts/kafka.sh clean
# The DRIFTSCOPE_KAFKA_DATA and DRIFTSCOPE_KAFKA_*PORT variables below, when set, still win for
# any instance (so do not export them globally when you use named instances).
#
# Environment:
#   DRIFTSCOPE_KAFKA_INSTANCE  which broker instance (see above; default: the main one)
#   DRIFTSCOPE_KAFKA_VERSION   org.apache.kafka:kafka_2.13 version (default 4.4.0)
#   DRIFTSCOPE_KAFKA_HOME      jar cache (default ~/.cache/driftscope/kafka-<version>); filled once
#                              with `mvn dependency:copy-dependencies` using scripts/kafka/pom.xml
#   DRIFTSCOPE_KAFKA_DATA      data dir: server.properties, KRaft log dirs, broker.log, pid file
#                              (default /tmp/driftscope-kafka); kept across stop/start
#   DRIFTSCOPE_KAFKA_PORT, DRIFTSCOPE_KAFKA_SASL_PORT, DRIFTSCOPE_KAFKA_CONTROLLER_PORT
#   DRIFTSCOPE_KAFKA_HEAP_OPTS     default "-Xms256m -Xmx512m"
#   DRIFTSCOPE_KAFKA_START_TIMEOUT seconds to wait for the broker to answer (default 90)
#   DRIFTSCOPE_KAFKA_STOP_TIMEOUT  seconds to wait after SIGTERM before SIGKILL (default 30)
#   DRIFTSCOPE_KAFKA_EXTRA_PROPS   extra server.properties lines (newline separated), appended
#                                  last so they override the defaults; applied on every start
#   JAVA_HOME / DRIFTSCOPE_KAFKA_JAVA  the java to use (Java 17+ required)
#
# Broker settings are tuned for tests: replication factors 1, group.initial.rebalance.delay.ms=0,
# auto.create.topics.enable=true, num.partitions=1, message.max.bytes and replica.fetch.max.bytes
# 16 MiB (the tests send a 10 MB message: producers must also raise max.request.size, default
# 1 MiB; consumers with default fetch sizes still receive it, as an oversized first batch).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
KAFKA_SUPPORT_DIR="$SCRIPT_DIR/kafka"

KAFKA_VERSION="${DRIFTSCOPE_KAFKA_VERSION:-4.4.0}"
KAFKA_HOME="${DRIFTSCOPE_KAFKA_HOME:-${HOME:-/root}/.cache/driftscope/kafka-$KAFKA_VERSION}"
INSTANCE="${DRIFTSCOPE_KAFKA_INSTANCE:-}"
if [[ "$INSTANCE" == "main" ]]; then INSTANCE=""; fi
if [[ -n "$INSTANCE" && ! "$INSTANCE" =~ ^[A-Za-z0-9_-]+$ ]]; then
  printf 'kafka.sh: error: DRIFTSCOPE_KAFKA_INSTANCE may only hold letters, digits, - and _: %s\n' "$INSTANCE" >&2
  exit 1
fi
HOST="127.0.0.1"
if [[ -z "$INSTANCE" ]]; then
  DATA_DIR="${DRIFTSCOPE_KAFKA_DATA:-/tmp/driftscope-kafka}"
  PORT="${DRIFTSCOPE_KAFKA_PORT:-19092}"
  SASL_PORT="${DRIFTSCOPE_KAFKA_SASL_PORT:-19094}"
  CONTROLLER_PORT="${DRIFTSCOPE_KAFKA_CONTROLLER_PORT:-19093}"
else
  DATA_DIR="${DRIFTSCOPE_KAFKA_DATA:-/tmp/driftscope-kafka-$INSTANCE}"
  # Filled from DATA_DIR/ports (or picked by allocate_ports on the first start); the
  # environment overrides any of them.
  PORT="${DRIFTSCOPE_KAFKA_PORT:-}"
  SASL_PORT="${DRIFTSCOPE_KAFKA_SASL_PORT:-}"
  CONTROLLER_PORT="${DRIFTSCOPE_KAFKA_CONTROLLER_PORT:-}"
fi
SASL_USER="driftscope"
SASL_PASSWORD="driftscope-secret"
HEAP_OPTS="${DRIFTSCOPE_KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
START_TIMEOUT="${DRIFTSCOPE_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${DRIFTSCOPE_KAFKA_STOP_TIMEOUT:-30}"
NODE_ID=1
MESSAGE_MAX_BYTES=16777216 # 16 MiB

JARS_DIR="$KAFKA_HOME/jars"
JARS_MARKER="$JARS_DIR/.complete"
LOG_DIRS="$DATA_DIR/kraft-logs"
PROPS_FILE="$DATA_DIR/server.properties"
SASL_CLIENT_PROPS="$DATA_DIR/client-sasl.properties"
PID_FILE="$DATA_DIR/kafka.pid"
BROKER_LOG="$DATA_DIR/broker.log"
DATA_MARKER="$DATA_DIR/.driftscope-kafka-data"
LOCK_FILE="$DATA_DIR/.lock"
PORTS_FILE="$DATA_DIR/ports"
PORTS_LOCK_FILE="/tmp/driftscope-kafka-ports.lock"
PORT_RANGE_FIRST=19200
PORT_RANGE_SLOTS=300 # slot k = ports FIRST+3k (PLAINTEXT), +1 (CONTROLLER), +2 (SASL_PLAINTEXT)

# Messages, Java, ports, liveness, lock and log tail: shared with the other service script.
SERVICE_SCRIPT="kafka.sh"
JAVA_OVERRIDE_VAR="DRIFTSCOPE_KAFKA_JAVA"
JAVA_NEEDED_BY="Kafka $KAFKA_VERSION"
# shellcheck source=lib/java-service.sh
source "$SCRIPT_DIR/lib/java-service.sh"

# ---------------------------------------------------------------------------------------------
# ports of a named instance

# Reads DATA_DIR/ports ("PLAINTEXT CONTROLLER SASL_PLAINTEXT") into the port variables that the
# environment did not set. Returns 1 when nothing is recorded yet.
load_ports() {
  [[ -n "$INSTANCE" ]] || return 0
  [[ -s "$PORTS_FILE" ]] || return 1
  local plain controller sasl
  read -r plain controller sasl <"$PORTS_FILE" || true
  PORT="${PORT:-$plain}"
  CONTROLLER_PORT="${CONTROLLER_PORT:-$controller}"
  SASL_PORT="${SASL_PORT:-$sasl}"
}

# Dies unless every port is known (named instances record theirs on the first start).
require_ports() {
  load_ports || true
  if [[ -z "$PORT" || -z "$SASL_PORT" || -z "$CONTROLLER_PORT" ]]; then
    die "instance '$INSTANCE' has no ports yet ($PORTS_FILE is missing): start it first"
  fi
}

# Picks three free ports for a named instance and records them in DATA_DIR/ports. Holds a
# machine-wide lock while choosing, and skips ports recorded by any other instance (running
# or not), so two instances never share a port even before either has bound it.
allocate_ports() {
  load_ports && [[ -n "$PORT" && -n "$SASL_PORT" && -n "$CONTROLLER_PORT" ]] && return 0
  mkdir -p "$DATA_DIR"
  exec 8>>"$PORTS_LOCK_FILE"
  if command -v flock >/dev/null 2>&1; then
    flock -w 60 8 || die "another kafka.sh is choosing ports (lock $PORTS_LOCK_FILE)"
  fi
  if load_ports && [[ -n "$PORT" && -n "$SASL_PORT" && -n "$CONTROLLER_PORT" ]]; then
    exec 8>&-
    return 0
  fi
  local reserved=" " f
  for f in /tmp/driftscope-kafka-*/ports; do
    [[ -f "$f" && "$f" != "$PORTS_FILE" ]] || continue
    reserved+="$(tr -s ' \n' ' ' <"$f") "
  done
  # Start at a slot derived from the name, so instances rarely probe the same ports.
  local start k slot p ok
  start=$(($(printf '%s' "$INSTANCE" | cksum | cut -d' ' -f1) % PORT_RANGE_SLOTS))
  for ((k = 0; k < PORT_RANGE_SLOTS; k++)); do
    slot=$(((start + k) % PORT_RANGE_SLOTS))
    ok=1
    for p in $((PORT_RANGE_FIRST + 3 * slot)) $((PORT_RANGE_FIRST + 3 * slot + 1)) $((PORT_RANGE_FIRST + 3 * slot + 2)); do
      if [[ "$reserved" == *" $p "* ]] || port_open "$p"; then
        ok=0
        break
      fi
    done
    if ((ok)); then
      PORT="${PORT:-$((PORT_RANGE_FIRST + 3 * slot))}"
      CONTROLLER_PORT="${CONTROLLER_PORT:-$((PORT_RANGE_FIRST + 3 * slot + 1))}"
      SASL_PORT="${SASL_PORT:-$((PORT_RANGE_FIRST + 3 * slot + 2))}"
      echo "$PORT $CONTROLLER_PORT $SASL_PORT" >"$PORTS_FILE"
      exec 8>&-
      log "instance '$INSTANCE': ports $PORT (PLAINTEXT), $CONTROLLER_PORT (CONTROLLER), $SASL_PORT (SASL_PLAINTEXT), recorded in $PORTS_FILE"
      return 0
    fi
  done
  exec 8>&-
  die "no free port triple in $PORT_RANGE_FIRST-$((PORT_RANGE_FIRST + 3 * PORT_RANGE_SLOTS - 1)) for instance '$INSTANCE'"
}

# ---------------------------------------------------------------------------------------------
# jars

fetch_jars() {
  if [[ -f "$JARS_MARKER" ]] && compgen -G "$JARS_DIR/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (needed once to download Kafka $KAFKA_VERSION jars; 'apt-get install maven')"
  [[ -f "$KAFKA_SUPPORT_DIR/pom.xml" ]] || die "missing $KAFKA_SUPPORT_DIR/pom.xml"
  mkdir -p "$KAFKA_HOME"
  local tmp mvn_log
  tmp="$(mktemp -d "$KAFKA_HOME/jars.tmp.XXXXXX")"
  mvn_log="$KAFKA_HOME/mvn.log"
  log "downloading Kafka $KAFKA_VERSION jars into $JARS_DIR (one-time, via mvn)..."
  local start=$SECONDS
  if ! mvn -B -q -Dstyle.color=never -f "$KAFKA_SUPPORT_DIR/pom.xml" \
    -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies \
    -DoutputDirectory="$tmp" -DincludeScope=runtime >"$mvn_log" 2>&1; then
    rm -rf "$tmp"
    tail -n 30 "$mvn_log" >&2 || true
    local first_error
    first_error="$(grep -m1 '\[ERROR\]' "$mvn_log" | sed 's/.*\[ERROR\] *//' || true)"
    die "mvn failed to fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION: ${first_error:-see log} (full output: $mvn_log)"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || {
    rm -rf "$tmp"
    die "mvn succeeded but kafka_2.13-$KAFKA_VERSION.jar is missing (see $mvn_log)"
  }
  rm -rf "$JARS_DIR"
  mv "$tmp" "$JARS_DIR"
  date -u +%Y-%m-%dT%H:%M:%SZ >"$JARS_MARKER"
  log "downloaded $(find "$JARS_DIR" -name '*.jar' | wc -l) jars ($(du -sh "$JARS_DIR" | cut -f1)) in $((SECONDS - start))s"
}

# Run a class from the Kafka jars in the foreground with quiet (stderr, WARN) logging.
run_class() {
  find_java
  fetch_jars
  local cls="$1"
  shift
  "$JAVA_BIN" -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_SUPPORT_DIR/tools-log4j2.properties" \
    -cp "$JARS_DIR/*" "$cls" "$@"
}

# ---------------------------------------------------------------------------------------------
# process state


# Prints the broker pid if the pid file points at a live kafka.Kafka process of this data dir.
broker_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  [[ -n "$pid" ]] || return 1
  alive "$pid" || return 1
  # Guard against pid reuse: the command line must be our broker with our server.properties.
  if [[ -r "/proc/$pid/cmdline" ]]; then
    local cmd
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    [[ "$cmd" == *kafka.Kafka* && "$cmd" == *"$PROPS_FILE"* ]] || return 1
  fi
  echo "$pid"
}

# Full health check: both client listeners accept TCP and a metadata request (list topics)
# over PLAINTEXT succeeds within $1 seconds (default 30).
broker_answers() {
  local limit="${1:-30}"
  if ! port_open "$PORT" || ! port_open "$SASL_PORT"; then return 1; fi
  # `timeout` needs an executable, so re-enter this script for run-class.
  timeout "$limit" "$SELF" run-class org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$HOST:$PORT" --list >/dev/null 2>&1
}


# ---------------------------------------------------------------------------------------------
# config + format

write_config() {
  cat >"$PROPS_FILE" <<EOF
# Generated by scripts/kafka.sh on every start; edits are overwritten.
# Use DRIFTSCOPE_KAFKA_EXTRA_PROPS to add or override settings.

# --- KRaft, single combined node
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters=$NODE_ID@$HOST:$CONTROLLER_PORT
controller.listener.names=CONTROLLER

# --- listeners (loopback only)
listeners=PLAINTEXT://$HOST:$PORT,SASL_PLAINTEXT://$HOST:$SASL_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,SASL_PLAINTEXT://$HOST:$SASL_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT

# --- SASL/PLAIN on the SASL_PLAINTEXT listener: user $SASL_USER / $SASL_PASSWORD
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$SASL_USER" password="$SASL_PASSWORD" user_$SASL_USER="$SASL_PASSWORD";

# --- storage
log.dirs=$LOG_DIRS
num.partitions=1
auto.create.topics.enable=true
delete.topic.enable=true

# --- single node: replication factor 1 everywhere
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# --- fast tests
group.initial.rebalance.delay.ms=0

# --- big messages (tests send 10 MB)
message.max.bytes=$MESSAGE_MAX_BYTES
replica.fetch.max.bytes=$MESSAGE_MAX_BYTES
replica.fetch.response.max.bytes=$((MESSAGE_MAX_BYTES * 2))

# --- small machine (2 cores)
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
EOF
  if [[ -n "${DRIFTSCOPE_KAFKA_EXTRA_PROPS:-}" ]]; then
    {
      echo
      echo "# --- DRIFTSCOPE_KAFKA_EXTRA_PROPS"
      printf '%s\n' "$DRIFTSCOPE_KAFKA_EXTRA_PROPS"
    } >>"$PROPS_FILE"
  fi

  cat >"$SASL_CLIENT_PROPS" <<EOF
# Client settings for the SASL_PLAINTEXT listener $HOST:$SASL_PORT (generated by scripts/kafka.sh).
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$SASL_USER" password="$SASL_PASSWORD";
EOF
}

format_if_needed() {
  if [[ -f "$LOG_DIRS/meta.properties" ]]; then
    return 0
  fi
  local cluster_id out
  if [[ -s "$DATA_DIR/cluster.id" ]]; then
    cluster_id="$(cat "$DATA_DIR/cluster.id")"
  else
    cluster_id="$(run_class kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)" ||
      die "kafka.tools.StorageTool random-uuid failed"
    [[ -n "$cluster_id" ]] || die "kafka.tools.StorageTool random-uuid printed nothing"
    echo "$cluster_id" >"$DATA_DIR/cluster.id"
  fi
  log "formatting KRaft log dir $LOG_DIRS (cluster id $cluster_id)..."
  if ! out="$(run_class kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS_FILE" 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "formatting $LOG_DIRS failed"
  fi
}

# ---------------------------------------------------------------------------------------------
# commands


cmd_start() {
  if [[ -n "$INSTANCE" ]]; then allocate_ports; fi
  check_port_number DRIFTSCOPE_KAFKA_PORT "$PORT"
  check_port_number DRIFTSCOPE_KAFKA_SASL_PORT "$SASL_PORT"
  check_port_number DRIFTSCOPE_KAFKA_CONTROLLER_PORT "$CONTROLLER_PORT"
  find_java
  acquire_lock

  local pid
  if pid="$(broker_pid)"; then
    if broker_answers; then
      log "already running (pid $pid)"
      echo "$HOST:$PORT"
      return 0
    fi
    log "broker process $pid exists but is not answering yet; waiting"
  else
    rm -f "$PID_FILE"
    local p
    for p in "$PORT" "$SASL_PORT" "$CONTROLLER_PORT"; do
      if port_open "$p"; then
        die "port $HOST:$p is already in use by another process (not the broker of $DATA_DIR); stop it or set DRIFTSCOPE_KAFKA_*PORT"
      fi
    done

    fetch_jars
    mkdir -p "$DATA_DIR"
    touch "$DATA_MARKER"
    write_config
    format_if_needed

    local gc_opts="-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35"
    echo "===== $(date -u +%Y-%m-%dT%H:%M:%SZ) kafka.sh start (Kafka $KAFKA_VERSION) =====" >>"$BROKER_LOG"
    # 9>&- : the broker must not inherit the lock fd (it would hold the lock forever).
    # No setsid: the broker stays in the caller's process group, so a CI job or test harness
    # that kills its group also kills the broker. nohup protects it from the terminal's SIGHUP.
    # shellcheck disable=SC2086 # HEAP_OPTS / gc_opts are deliberately word-split
    nohup "$JAVA_BIN" $HEAP_OPTS $gc_opts \
      -XX:+ExitOnOutOfMemoryError \
      -Djava.awt.headless=true \
      -Dkafka.logs.dir="$DATA_DIR" \
      -Dlog4j2.configurationFile="$KAFKA_SUPPORT_DIR/log4j2.properties" \
      -cp "$JARS_DIR/*" kafka.Kafka "$PROPS_FILE" \
      </dev/null >>"$BROKER_LOG" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    log "started broker pid $pid (Kafka $KAFKA_VERSION, data $DATA_DIR), waiting up to ${START_TIMEOUT}s..."
  fi

  # Wait: cheap TCP polls first, then one JVM-based metadata check per try.
  local deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! alive "$pid"; then
      print_log_tail "$BROKER_LOG"
      rm -f "$PID_FILE"
      die "broker process $pid exited during startup (see $BROKER_LOG)"
    fi
    if port_open "$PORT" && port_open "$SASL_PORT"; then
      if broker_answers; then
        log "broker is up: PLAINTEXT $HOST:$PORT, SASL_PLAINTEXT $HOST:$SASL_PORT (user $SASL_USER)"
        echo "$HOST:$PORT"
        return 0
      fi
      sleep 1
    else
      sleep 0.5
    fi
  done
  print_log_tail "$BROKER_LOG"
  die "broker (pid $pid) did not answer on $HOST:$PORT within ${START_TIMEOUT}s; it is left running, use '$0 stop' to stop it"
}

# SIGKILL, then wait up to $2 tenths of a second for the process to be gone; fails if
# it is still alive.
sigkill_and_wait() {
  local pid="$1" tenths="$2" _
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 "$tenths"); do
    alive "$pid" || return 0
    sleep 0.1
  done
  ! alive "$pid"
}

cmd_stop() {
  local wipe=0
  while (($#)); do
    case "$1" in
    --wipe | --clean) wipe=1 ;;
    *) die "stop: unknown option '$1'" ;;
    esac
    shift
  done

  if [[ ! -d "$DATA_DIR" ]]; then
    log "not running (no data dir $DATA_DIR)"
    return 0
  fi
  acquire_lock

  local pid
  if pid="$(broker_pid)"; then
    log "stopping broker pid $pid (SIGTERM, up to ${STOP_TIMEOUT}s)..."
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while alive "$pid" && ((SECONDS < deadline)); do
      sleep 0.2
    done
    if alive "$pid"; then
      log "broker pid $pid still alive after ${STOP_TIMEOUT}s; sending SIGKILL"
      sigkill_and_wait "$pid" 50 || true
    fi
    log "stopped"
  else
    log "not running"
  fi
  rm -f "$PID_FILE"

  if ((wipe)); then
    if [[ -f "$DATA_MARKER" ]]; then
      rm -rf -- "$DATA_DIR"
      log "wiped $DATA_DIR"
    else
      die "refusing to delete $DATA_DIR: it has no $(basename "$DATA_MARKER") marker (not created by kafka.sh)"
    fi
  fi
}

# SIGKILL, no grace period: the broker dies as in a crash (no controlled shutdown, no flush).
# The data dir stays; the next start recovers the logs.
cmd_kill() {
  if [[ ! -d "$DATA_DIR" ]]; then
    log "not running (no data dir $DATA_DIR)"
    return 0
  fi
  acquire_lock
  local pid
  if pid="$(broker_pid)"; then
    log "killing broker pid $pid (SIGKILL)"
    sigkill_and_wait "$pid" 100 || die "broker pid $pid is still alive 10s after SIGKILL"
    log "killed"
  else
    log "not running"
  fi
  rm -f "$PID_FILE"
}

cmd_status() {
  local pid
  if ! pid="$(broker_pid)"; then
    echo "stopped (data dir $DATA_DIR)"
    return 1
  fi
  require_ports
  if broker_answers 15; then
    echo "running pid=$pid version=$KAFKA_VERSION plaintext=$HOST:$PORT sasl_plaintext=$HOST:$SASL_PORT controller=$HOST:$CONTROLLER_PORT data=$DATA_DIR"
    return 0
  fi
  echo "running pid=$pid but NOT answering on $HOST:$PORT (starting, stopping or hung; see '$0 logs')"
  return 2
}

cmd_logs() {
  local follow=0 n=100
  while (($#)); do
    case "$1" in
    -f | --follow) follow=1 ;;
    -n) n="$2"; shift ;;
    [0-9]*) n="$1" ;;
    *) die "logs: unknown option '$1'" ;;
    esac
    shift
  done
  [[ -f "$BROKER_LOG" ]] || die "no broker log yet ($BROKER_LOG)"
  if ((follow)); then
    exec tail -n "$n" -F "$BROKER_LOG"
  fi
  tail -n "$n" "$BROKER_LOG"
}

cmd_bootstrap() {
  require_ports
  case "${1:-}" in
  --sasl) echo "$HOST:$SASL_PORT" ;;
  "" | --plaintext) echo "$HOST:$PORT" ;;
  *) die "bootstrap: unknown option '$1'" ;;
  esac
}

cmd_client_config() {
  require_ports
  [[ -f "$SASL_CLIENT_PROPS" ]] || {
    mkdir -p "$DATA_DIR"
    write_config
  }
  echo "$SASL_CLIENT_PROPS"
}

usage() {
  sed -n '2,/^set -euo pipefail/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

main() {
  local cmd="${1:-}"
  (($#)) && shift
  case "$cmd" in
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  clean | wipe) cmd_stop --wipe ;;
  kill) cmd_kill ;;
  restart)
    cmd_stop
    cmd_start
    ;;
  status) cmd_status ;;
  logs | log) cmd_logs "$@" ;;
  bootstrap) cmd_bootstrap "$@" ;;
  client-config) cmd_client_config ;;
  run-class)
    (($#)) || die "run-class: missing class name"
    run_class "$@"
    ;;
  fetch)
    find_java
    fetch_jars
    echo "$JARS_DIR"
    ;;
  -h | --help | help) usage ;;
  "") usage >&2; exit 64 ;;
  *)
    usage >&2
    die "unknown command '$cmd'"
    ;;
  esac
}

main "$@"
