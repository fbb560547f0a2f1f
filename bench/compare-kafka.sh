#!/usr/bin/env bash
# Sluiceway side by side with Apache Kafka 4.3.2 on this machine, in one run, one table.
#
#   bench/compare-kafka.sh [--quick] [--keep]
#
# Builds the release `sluiceway`, fetches Kafka (bench/kafka.sh), starts a one-node Kafka
# (KRaft) and one Sluiceway broker on loopback, and runs each workload on Kafka, then on
# Sluiceway with flush.policy=os (equal durability: Kafka does not fsync per write), then with
# the default flush.policy=always; only the system being measured has work (the other idles).
# Then the same with three brokers each (replication factor 3, acks=all: Kafka's 3 combined
# KRaft nodes, Sluiceway's scripts/cluster.sh with one etcd). Settings on both sides: acks=1
# (acks=all for RF 3), linger.ms=5, batch.size=65536, no compression.
#
# Workloads: (a) produce 1 KiB to 1 partition, max throughput; (b) produce 100 B to 6
# partitions; (c) consume each backlog; (d) end-to-end latency at a fixed rate below saturation
# (p50/p99/p99.9 from each message's intended send time; Kafka: bench/kafka/E2eLatency.java,
# Sluiceway: `sluiceway bench e2e --rate`), then again as (d0) with linger.ms=0 on both sides;
# (e) RF 3 acks=all produce 1 KiB; (f) the Python and Node producers against both, when
# python/bench/bench.py and node/bench/bench.mjs exist and run (else a note says why they were
# skipped).
#
# Kafka's figures come from its own tools: ProducerPerformance (records/s) and
# ConsumerPerformance (fetch.nMsg.sec, which excludes the group join). MB/s is 10^6 bytes/s of
# values everywhere (Kafka's tools print MiB; we recompute from records/s × size).
#
# --quick: small counts (a minute or two); default: the full run. --keep: leave the work
# directory (logs, raw JSON) in place. Everything lives in one temp dir; every process this
# script starts is stopped on exit. Prints the Markdown table last on stdout; progress and raw
# results go to stderr.
#
# Environment: SLUICEWAY_KAFKA_CACHE (see bench/kafka.sh), PYTHON (default python3), NODE
# (default node), SLUICEWAY_PY_BENCH / SLUICEWAY_NODE_BENCH (override the scripts' paths).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_SH="$ROOT/bench/kafka.sh"
BIN="$ROOT/target/release/sluiceway"
PYTHON="${PYTHON:-python3}"
NODE="${NODE:-node}"
PY_BENCH="${SLUICEWAY_PY_BENCH:-$ROOT/python/bench/bench.py}"
NODE_BENCH="${SLUICEWAY_NODE_BENCH:-$ROOT/node/bench/bench.mjs}"

quick=0
keep=0
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    --keep) keep=1 ;;
    -h | --help)
      sed -n '2,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "compare-kafka.sh: unknown argument '$a' (--quick, --keep)" >&2
      exit 2
      ;;
  esac
done

if ((quick)); then
  N_1K=50000 N_100=200000 E2E_N=5000 E2E_RATE=2000 RF3_N=20000 CLIENT_N=20000
else
  N_1K=500000 N_100=2000000 E2E_N=100000 E2E_RATE=5000 RF3_N=200000 CLIENT_N=1000000
fi
E2E_SIZE=1024
LINGER=5
BATCH=65536

WORK="$(mktemp -d "${TMPDIR:-/tmp}/compare-kafka.XXXXXX")"
RESULTS="$WORK/results.jsonl"
NOTES="$WORK/notes.txt"
: >"$RESULTS"
: >"$NOTES"
SLW_PID=""
CLUSTER_DIR=""

log() { echo "compare-kafka: $*" >&2; }

cleanup() {
  local rc=$?
  set +e
  "$KAFKA_SH" stop "$WORK/kafka1" 2>/dev/null
  "$KAFKA_SH" stop "$WORK/kafka3" 2>/dev/null
  if [[ -n "$SLW_PID" ]] && kill -0 "$SLW_PID" 2>/dev/null; then
    kill -TERM "$SLW_PID"
    wait "$SLW_PID" 2>/dev/null
  fi
  if [[ -n "$CLUSTER_DIR" ]]; then
    SLUICEWAY_BIN="$BIN" "$ROOT/scripts/cluster.sh" stop "$CLUSTER_DIR" >/dev/null 2>&1
  fi
  if ((keep)); then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# record WORKLOAD SYSTEM JSON: one result line (JSON with the run's figures).
record() {
  local workload="$1" system="$2" json="$3"
  "$PYTHON" - "$workload" "$system" "$json" >>"$RESULTS" <<'EOF'
import json, sys
w, s, j = sys.argv[1:4]
d = json.loads(j)
d["workload"], d["system"] = w, s
print(json.dumps(d))
EOF
  log "$workload / $system: $json"
}

note() {
  echo "$*" >>"$NOTES"
  log "note: $*"
}

# ---------------------------------------------------------------- build, fetch, start
log "building the release sluiceway (cargo build --release -p sluiceway-broker --bin sluiceway)"
(cd "$ROOT" && cargo build --release -p sluiceway-broker --bin sluiceway >&2)
"$KAFKA_SH" fetch >/dev/null

log "starting Kafka (1 node) and Sluiceway (1 broker, embedded registry)"
KAFKA1="$("$KAFKA_SH" start "$WORK/kafka1" | tail -n1)"
SLW_PORT="$(free_port)"
SLW="127.0.0.1:$SLW_PORT"
"$BIN" broker --data-dir "$WORK/sluiceway1" --listen "$SLW" >"$WORK/sluiceway1.log" 2>&1 &
SLW_PID=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$SLW_PORT") 2>/dev/null && break
  kill -0 "$SLW_PID" 2>/dev/null || {
    cat "$WORK/sluiceway1.log" >&2
    exit 1
  }
  sleep 0.1
done

kafka_run() { "$KAFKA_SH" run "$@"; }

# Before every measured row: what earlier rows (of either system) left dirty in the page cache
# is written out first, so no row shares the disk with the writeback of another's data.
settle() { sync; }

# Deletes every topic of both single-node systems, once a workload's topics have been read.
# A broker at steady state recycles its page cache (retention deletes old segments); one whose
# data only grows soon writes into memory that this VM has handed back to its host (free page
# reporting), where the first write of every page costs a host fault: 1M x 1 KiB produced into
# an idle Sluiceway broker, run after run, fell from ~560 to ~260 MB/s once ~5 GB of new page
# cache had been written, and stayed at ~550 MB/s when each run's topic was deleted after it
# (docs/benchmarks.md). Without this, the late rows measured that, for both systems.
drop_topics() {
  kafka_run org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA1" --delete \
    --topic '[a-zA-Z].*' >&2 2>/dev/null || true
  local t
  for t in $("$BIN" topic list --bootstrap "$SLW" | grep -v '^__'); do
    "$BIN" topic delete --bootstrap "$SLW" "$t" >&2
  done
  sleep 1 # Kafka deletes the files after file.delete.delay.ms (bench/kafka.sh sets 0)
  log "topics deleted; page cache now $(awk '/^Cached:/ {print int($2 / 1024)}' /proc/meminfo) MiB"
}

kafka_topic() { # BOOTSTRAP TOPIC PARTITIONS RF
  kafka_run org.apache.kafka.tools.TopicCommand --bootstrap-server "$1" --create --if-not-exists \
    --topic "$2" --partitions "$3" --replication-factor "$4" >&2
}

# kafka_produce WORKLOAD BOOTSTRAP TOPIC SIZE N ACKS
kafka_produce() {
  local out
  settle
  out="$(kafka_run org.apache.kafka.tools.ProducerPerformance --topic "$3" --num-records "$5" \
    --record-size "$4" --throughput -1 --command-property bootstrap.servers="$2" acks="$6" \
    linger.ms=$LINGER batch.size=$BATCH 2>&1 | tail -n1)"
  record "$1" kafka "$("$PYTHON" - "$out" "$4" "$5" <<'EOF'
import json, re, sys
line, size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = re.search(r"(\d+) records sent, ([\d.]+) records/sec.*?([\d.]+) ms avg latency, ([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th", line)
if not m:
    sys.exit("ProducerPerformance printed: " + line)
rate = float(m.group(2))
print(json.dumps({"client": "java", "mode": "produce", "size": size, "messages": int(m.group(1)),
    "msgs_per_sec": rate, "mb_per_sec": rate * size / 1e6, "p50_ms": float(m.group(5)),
    "p99_ms": float(m.group(7)), "p999_ms": float(m.group(8)), "max_ms": float(m.group(4))}))
EOF
)"
}

# kafka_consume WORKLOAD BOOTSTRAP TOPIC N SIZE
kafka_consume() {
  local out
  settle
  out="$(kafka_run org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$2" \
    --topic "$3" --num-records "$4" --timeout 60000 2>&1 | tail -n1)"
  record "$1" kafka "$("$PYTHON" - "$out" "$5" <<'EOF'
import json, sys
line, size = sys.argv[1], int(sys.argv[2])
f = [x.strip() for x in line.split(",")]
if len(f) < 10:
    sys.exit("ConsumerPerformance printed: " + line)
rate = float(f[9])  # fetch.nMsg.sec: excludes the group join
print(json.dumps({"client": "java", "mode": "consume", "size": size, "messages": int(f[4]),
    "msgs_per_sec": rate, "mb_per_sec": rate * size / 1e6, "note": "fetch only"}))
EOF
)"
}

# slw_bench WORKLOAD SYSTEM BOOTSTRAP ARGS...: `sluiceway bench ... --json`
slw_bench() { # WORKLOAD SYSTEM BOOTSTRAP BENCH-ARGS... (linger: $SLW_LINGER, else $LINGER)
  local w="$1" s="$2" b="$3"
  shift 3
  local out
  settle
  out="$("$BIN" bench "$@" --bootstrap "$b" --linger-ms "${SLW_LINGER:-$LINGER}" --batch-size $BATCH \
    --json --quiet)"
  record "$w" "$s" "$out"
}

# --------------------------------------------------------------- (a) (b) produce, (c) consume
T=$(date +%s)
run_produce() { # WORKLOAD SIZE PARTITIONS N
  local w="$1" size="$2" parts="$3" n="$4" t="$1-$T"
  kafka_topic "$KAFKA1" "$t" "$parts" 1
  kafka_produce "$w" "$KAFKA1" "$t" "$size" "$n" 1
  slw_bench "$w" sluiceway-os "$SLW" produce --topic "$t-os" --partitions "$parts" \
    --flush-policy os --size "$size" --messages "$n" --acks 1
  slw_bench "$w" sluiceway-always "$SLW" produce --topic "$t-always" --partitions "$parts" \
    --flush-policy always --size "$size" --messages "$n" --acks 1
}
run_consume() { # WORKLOAD FROM-WORKLOAD SIZE N
  local w="$1" t="$2-$T" size="$3" n="$4"
  kafka_consume "$w" "$KAFKA1" "$t" "$n" "$size"
  slw_bench "$w" sluiceway-os "$SLW" consume --topic "$t-os" --messages "$n"
  slw_bench "$w" sluiceway-always "$SLW" consume --topic "$t-always" --messages "$n"
}

log "(a) produce $N_1K x 1 KiB, 1 partition"
run_produce "a" 1024 1 "$N_1K"
log "(b) produce $N_100 x 100 B, 6 partitions"
run_produce "b" 100 6 "$N_100"
log "(c) consume both backlogs"
run_consume "c1" "a" 1024 "$N_1K"
run_consume "c2" "b" 100 "$N_100"
drop_topics

# --------------------------------------------------------------- (d) e2e at a fixed rate
# Twice: (d) with the linger of the other rows (5 ms), where every record waits up to the linger
# by definition, and (d0) with linger.ms=0 on both sides, the latency-tuned setting, which shows
# what each system adds itself.
LOG4J_TOOLS="$(dirname "$("$KAFKA_SH" fetch | tail -n1)")/log4j2-tools.properties"
e2e_kafka() { # WORKLOAD BOOTSTRAP TOPIC RF ACKS LINGER_MS
  local out
  settle
  out="$(java -Xmx1g -Dlog4j2.configurationFile="$LOG4J_TOOLS" -cp "$("$KAFKA_SH" classpath)" \
    "$ROOT/bench/kafka/E2eLatency.java" "$2" "$3" "$E2E_N" "$E2E_RATE" "$E2E_SIZE" 1 "$4" "$5" \
    "$6" $BATCH)"
  record "$1" kafka "$out"
}
e2e_rows() { # WORKLOAD LINGER_MS
  local w="$1" linger="$2"
  log "($w) end to end, $E2E_N x $E2E_SIZE B at $E2E_RATE msg/s, 1 partition, linger.ms=$linger"
  e2e_kafka "$w" "$KAFKA1" "$w-$T" 1 1 "$linger"
  SLW_LINGER="$linger" slw_bench "$w" sluiceway-os "$SLW" e2e --topic "$w-$T-os" --partitions 1 \
    --flush-policy os --size $E2E_SIZE --messages "$E2E_N" --rate "$E2E_RATE" --acks 1
  SLW_LINGER="$linger" slw_bench "$w" sluiceway-always "$SLW" e2e --topic "$w-$T-always" \
    --partitions 1 --flush-policy always --size $E2E_SIZE --messages "$E2E_N" --rate "$E2E_RATE" \
    --acks 1
  drop_topics
}
e2e_rows "d" "$LINGER"
e2e_rows "d0" 0

# --------------------------------------------------------------- (f) language clients
client_rows() { # CLIENT-NAME COMMAND...
  local name="$1"
  shift
  local target b system out line
  if ! "$@" --help 2>&1 | grep -q -- --target; then
    note "(f) $name rows skipped: \`$* --help\` shows no --target (or the command does not run)"
    return
  fi
  for target in kafka sluiceway; do
    if [[ $target == kafka ]]; then b="$KAFKA1"; else b="$SLW"; fi
    settle
    if ! out="$("$@" --target "$target" --bootstrap "$b" --size 1024 --messages "$CLIENT_N" \
      --json 2>"$WORK/$name-$target.err")"; then
      note "(f) $name against $target failed, rows skipped: $(tail -n1 "$WORK/$name-$target.err")"
      continue
    fi
    while IFS= read -r line; do
      [[ $line == \{* ]] || continue
      system=kafka
      [[ $target == sluiceway ]] && system=sluiceway-always
      record "f-$name-$(echo "$line" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["mode"])')" \
        "$system" "$line"
    done <<<"$out"
  done
}
if [[ -f "$PY_BENCH" ]]; then
  log "(f) Python: $PY_BENCH"
  client_rows python "$PYTHON" "$PY_BENCH"
  drop_topics
else
  note "(f) Python rows skipped: $PY_BENCH does not exist in this checkout"
fi
if [[ -f "$NODE_BENCH" ]]; then
  log "(f) Node: $NODE_BENCH"
  client_rows node "$NODE" "$NODE_BENCH"
  drop_topics
else
  note "(f) Node rows skipped: $NODE_BENCH does not exist in this checkout"
fi

# Single-node systems down before the three-broker runs.
"$KAFKA_SH" stop "$WORK/kafka1"
kill -TERM "$SLW_PID"
wait "$SLW_PID" 2>/dev/null || true
SLW_PID=""

# --------------------------------------------------------------- (e) RF 3, acks=all
log "(e) replication factor 3, acks=all: $RF3_N x 1 KiB, 3 partitions, three brokers each"
KAFKA3="$("$KAFKA_SH" start "$WORK/kafka3" --brokers 3 | tail -n1)"
kafka_topic "$KAFKA3" "e-$T" 3 3
kafka_produce "e" "$KAFKA3" "e-$T" 1024 "$RF3_N" all
"$KAFKA_SH" stop "$WORK/kafka3"
CLUSTER_DIR="$WORK/sluiceway3"
ports="$(free_port) $(free_port) $(free_port)"
# cluster.sh's last line: `export SLUICEWAY_BOOTSTRAP=HOST:PORT,...`.
SLW3="$(SLUICEWAY_BIN="$BIN" SLUICEWAY_CLUSTER_PORTS="$ports" "$ROOT/scripts/cluster.sh" start \
  "$CLUSTER_DIR" | tail -n1 | sed 's/^export SLUICEWAY_BOOTSTRAP=//')"
slw_bench "e" sluiceway-os "$SLW3" produce --topic "e-$T-os" --partitions 3 \
  --replication-factor 3 --flush-policy os --size 1024 --messages "$RF3_N" --acks all
slw_bench "e" sluiceway-always "$SLW3" produce --topic "e-$T-always" --partitions 3 \
  --replication-factor 3 --flush-policy always --size 1024 --messages "$RF3_N" --acks all
SLUICEWAY_BIN="$BIN" "$ROOT/scripts/cluster.sh" stop "$CLUSTER_DIR" >/dev/null
CLUSTER_DIR=""

# --------------------------------------------------------------- the table
if ((quick)); then label="--quick"; else label="full"; fi
"$PYTHON" - "$RESULTS" "$NOTES" "$label" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
notes = [l.rstrip() for l in open(sys.argv[2]) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["workload"], {})[r["system"]] = r

def n(x):
    return f"{x/1e6:.2f}M" if x >= 1e6 else f"{x/1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"

def tput(r):
    if r is None:
        return "—"
    return f"{r['mb_per_sec']:.1f} MB/s ({n(r['msgs_per_sec'])} msg/s)"

def lat(r):
    if r is None:
        return "—"
    return f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} / {r['p999_ms']:.2f} ms"

def ratio(k, s, latency):
    if k is None or s is None:
        return "—"
    if latency:  # > 1: Sluiceway's p99 is lower
        return f"{k['p99_ms'] / max(s['p99_ms'], 1e-9):.2f}×" if s["p99_ms"] else "—"
    return f"{s['msgs_per_sec'] / max(k['msgs_per_sec'], 1e-9):.2f}×"

desc = {
    "a": ("produce 1 KiB, 1 partition, acks=1", "RF 1; Kafka & os: page cache, no fsync; always: fsync before ack"),
    "b": ("produce 100 B, 6 partitions, acks=1", "as (a)"),
    "c1": ("consume the (a) backlog (1 KiB)", "read path (Kafka: fetch only, no group join)"),
    "c2": ("consume the (b) backlog (100 B)", "read path (Kafka: fetch only, no group join)"),
    "d": ("end to end 1 KiB, 1 partition, fixed rate, p50 / p99 / p99.9", "as (a); latency from intended send time"),
    "d0": ("the same with linger.ms=0 on both sides", "as (d)"),
    "e": ("produce 1 KiB, RF 3, acks=all, 3 brokers", "3 replicas; Kafka & os: page cache; always: fsync on every replica"),
}
print(f"| workload ({sys.argv[3]}) | Kafka 4.3.2 | Sluiceway `os` | ratio | Sluiceway `always` | ratio | durability |")
print("|---|---|---|---|---|---|---|")
order = ["a", "b", "c1", "c2", "d", "d0", "e"] + sorted(w for w in by if w.startswith("f-"))
for w in order:
    if w not in by:
        continue
    k, so, sa = (by[w].get(x) for x in ("kafka", "sluiceway-os", "sluiceway-always"))
    latency = w in ("d", "d0")
    cell = lat if latency else tput
    if w.startswith("f-"):
        anyr = k or sa
        clients = " vs ".join(r.get("client", "?") for r in (k, sa) if r)
        name = f"{w[2:]} ({clients}, {anyr.get('size', '?')} B)"
        print(f"| {name} | {cell(k)} | — | — | {cell(sa)} | {ratio(k, sa, latency)} | client library against each broker; Sluiceway default `always` |")
        continue
    d = desc.get(w, (w, ""))
    print(f"| {d[0]} | {cell(k)} | {cell(so)} | {ratio(k, so, latency)} | {cell(sa)} | {ratio(k, sa, latency)} | {d[1]} |")
print()
print("Ratios: Sluiceway ÷ Kafka in messages/s (for the latency rows: Kafka's p99 ÷ Sluiceway's p99); above 1× Sluiceway is ahead.")
for l in notes:
    print(f"- {l}")
EOF
