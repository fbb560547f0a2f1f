#!/usr/bin/env bash
# Apache Kafka 4.3.2 on loopback, from Maven Central, for side-by-side benchmarks.
#
# Interface (stable: bench/compare-kafka.sh and the Python/Node benchmark helpers call it):
#
#   bench/kafka.sh fetch
#       Resolves kafka_2.13, kafka-tools, their runtime dependencies and a log4j binding for
#       slf4j 1.7 with `mvn dependency:copy-dependencies` into $SLUICEWAY_KAFKA_CACHE (default
#       ${XDG_CACHE_HOME:-$HOME/.cache}/sluiceway/kafka-4.3.2). Idempotent: a second call only
#       checks the marker file. Last stdout line: the directory holding the jars.
#
#   bench/kafka.sh start <dir> [--brokers 1|3]
#       Fetches if needed, formats a KRaft cluster with all its state under <dir> (created if
#       missing; must not hold a running cluster), starts it on free loopback ports and waits
#       until every broker is unfenced and answers on its port. --brokers 1 (default): one
#       combined broker+controller node. --brokers 3: three combined broker+controller nodes
#       forming a 3-voter static quorum (the shape of a small production cluster; replication
#       factor 3 and acks=all are then possible). Last stdout line: the bootstrap servers,
#       `127.0.0.1:PORT` or `127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`. Broker logs go to
#       <dir>/nodeN/server.log. The processes outlive the script: call `stop`.
#
#   bench/kafka.sh stop <dir>
#       Stops every node started under <dir> (SIGTERM, then SIGKILL after 30 s) and waits for
#       them to exit. Safe to call twice or on a directory where nothing runs.
#
#   bench/kafka.sh run <main-class> [args...]
#       Runs a Kafka class (e.g. org.apache.kafka.tools.ProducerPerformance) with the cached
#       classpath, warnings-only logging to stderr and a 1 GiB heap.
#
#   bench/kafka.sh classpath
#       Prints the classpath (`<cache>/lib/*`).
#
# Environment: SLUICEWAY_KAFKA_CACHE (jar cache), KAFKA_HEAP_OPTS (default -Xms512m -Xmx1g per
# JVM), JAVA (default java; OpenJDK 17 works).
set -euo pipefail

KAFKA_VERSION=4.3.2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${SLUICEWAY_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluiceway/kafka-$KAFKA_VERSION}"
LIB="$CACHE/lib"
JAVA="${JAVA:-java}"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}"
JVM_OPTS=(-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
  -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true)

die() {
  echo "kafka.sh: $*" >&2
  exit 2
}

usage() {
  sed -n '2,35p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

fetch() {
  local marker="$CACHE/.complete-$KAFKA_VERSION"
  if [[ -f "$marker" ]] && compgen -G "$LIB/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null; then
    echo "$LIB"
    return
  fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  mkdir -p "$CACHE"
  # Several callers may fetch at once (the benchmark scripts of each language): one resolves,
  # the others wait for it and find the marker.
  exec 9>"$CACHE/.lock"
  flock 9
  if [[ -f "$marker" ]] && compgen -G "$LIB/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null; then
    exec 9>&-
    echo "$LIB"
    return
  fi
  echo "kafka.sh: resolving Kafka $KAFKA_VERSION from Maven Central into $CACHE ..." >&2
  rm -rf "$LIB.tmp"
  mvn -q -B -f "$HERE/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    -Dmaven.repo.local="$CACHE/m2" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIB.tmp" >&2
  rm -rf "$LIB"
  mv "$LIB.tmp" "$LIB"
  touch "$marker"
  exec 9>&-
  echo "$LIB"
}

# Log4j2 configuration for the command-line tools: warnings and errors to stderr.
tools_log_config() {
  local f="$CACHE/log4j2-tools.properties"
  if [[ ! -f "$f" ]]; then
    cat >"$f" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = STDERR
EOF
  fi
  echo "$f"
}

run_class() {
  [[ $# -ge 1 ]] || die "run: give a main class"
  fetch >/dev/null
  local log
  log="$(tools_log_config)"
  # shellcheck disable=SC2086
  exec "$JAVA" $HEAP_OPTS "${JVM_OPTS[@]}" -Dlog4j2.configurationFile="$log" -cp "$LIB/*" "$@"
}

# Prints N distinct free loopback TCP ports (the kernel picks them; they are released before
# Kafka binds them, so another process could take one in between — start fails loudly then).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

node_alive() {
  local pidfile="$1/pid"
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

start() {
  local dir="" brokers=1
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --brokers)
        [[ $# -ge 2 ]] || die "--brokers needs a value (1 or 3)"
        brokers="$2"
        shift 2
        ;;
      --brokers=*)
        brokers="${1#--brokers=}"
        shift
        ;;
      -*) die "start: unknown option '$1'" ;;
      *)
        [[ -z "$dir" ]] || die "start: one directory only (got '$dir' and '$1')"
        dir="$1"
        shift
        ;;
    esac
  done
  [[ -n "$dir" ]] || die "start: give a data directory: kafka.sh start <dir> [--brokers 1|3]"
  [[ "$brokers" == 1 || "$brokers" == 3 ]] || die "--brokers must be 1 or 3 (got '$brokers')"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local i
  for i in 1 2 3; do
    if node_alive "$dir/node$i"; then
      die "a Kafka node already runs under $dir/node$i (kafka.sh stop $dir first)"
    fi
  done
  fetch >/dev/null
  command -v "$JAVA" >/dev/null || die "java not found"

  local ports
  read -r -a ports <<<"$(free_ports $((2 * brokers)))"
  local voters="" bootstrap=""
  for ((i = 1; i <= brokers; i++)); do
    local cport="${ports[$((brokers + i - 1))]}" bport="${ports[$((i - 1))]}"
    voters+="${voters:+,}$i@127.0.0.1:$cport"
    bootstrap+="${bootstrap:+,}127.0.0.1:$bport"
  done
  local rf=$((brokers < 3 ? brokers : 3))
  local min_isr=$((brokers == 3 ? 2 : 1))

  local cluster_id
  cluster_id="$("$JAVA" -cp "$LIB/*" -Dlog4j2.configurationFile="$(tools_log_config)" \
    kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
  [[ -n "$cluster_id" ]] || die "StorageTool random-uuid printed nothing"

  for ((i = 1; i <= brokers; i++)); do
    local nd="$dir/node$i" bport="${ports[$((i - 1))]}" cport="${ports[$((brokers + i - 1))]}"
    rm -rf "$nd"
    mkdir -p "$nd/data"
    cat >"$nd/server.properties" <<EOF
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$bport
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$nd/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=$rf
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
log.retention.hours=1
file.delete.delay.ms=0
auto.create.topics.enable=true
EOF
    cat >"$nd/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $nd/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
EOF
    "$JAVA" -cp "$LIB/*" -Dlog4j2.configurationFile="$(tools_log_config)" \
      kafka.tools.StorageTool format --cluster-id "$cluster_id" --config "$nd/server.properties" \
      --ignore-formatted >"$nd/format.log" 2>&1 || {
      cat "$nd/format.log" >&2
      die "formatting node $i failed"
    }
  done

  for ((i = 1; i <= brokers; i++)); do
    local nd="$dir/node$i"
    # shellcheck disable=SC2086
    setsid "$JAVA" $HEAP_OPTS "${JVM_OPTS[@]}" -Dlog4j2.configurationFile="$nd/log4j2.properties" \
      -Dkafka.logs.dir="$nd" -cp "$LIB/*" kafka.Kafka "$nd/server.properties" \
      >"$nd/stdout.log" 2>&1 </dev/null &
    echo $! >"$nd/pid"
  done
  echo "$bootstrap" >"$dir/bootstrap"

  # Ready when every node logged that it started (after the broker was unfenced) and its
  # broker port accepts connections.
  local deadline=$((SECONDS + 120))
  for ((i = 1; i <= brokers; i++)); do
    local nd="$dir/node$i" bport="${ports[$((i - 1))]}"
    until grep -q "Kafka Server started" "$nd/server.log" 2>/dev/null &&
      (exec 3<>"/dev/tcp/127.0.0.1/$bport") 2>/dev/null; do
      if ! node_alive "$nd"; then
        tail -n 30 "$nd/stdout.log" "$nd/server.log" >&2 2>/dev/null || true
        stop "$dir" >/dev/null 2>&1 || true
        die "node $i exited during startup (logs under $nd)"
      fi
      if ((SECONDS > deadline)); then
        stop "$dir" >/dev/null 2>&1 || true
        die "node $i did not start within 120 s (logs under $nd)"
      fi
      sleep 0.3
    done
  done
  echo "kafka.sh: $brokers-node KRaft cluster up under $dir" >&2
  echo "$bootstrap"
}

stop() {
  local dir="${1:-}"
  [[ -n "$dir" ]] || die "stop: give the directory given to start"
  [[ -d "$dir" ]] || return 0
  local pids=() nd pid
  for nd in "$dir"/node*; do
    [[ -f "$nd/pid" ]] || continue
    pid="$(cat "$nd/pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  local deadline=$((SECONDS + 30))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS > deadline)); then
        kill -KILL "$pid" 2>/dev/null || true
      fi
      sleep 0.2
    done
  done
  for nd in "$dir"/node*; do
    rm -f "$nd/pid"
  done
  [[ ${#pids[@]} -eq 0 ]] || echo "kafka.sh: stopped ${#pids[@]} node(s) under $dir" >&2
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  fetch) fetch ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  run) run_class "$@" ;;
  classpath)
    fetch >/dev/null
    echo "$LIB/*"
    ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
