#!/usr/bin/env bash
# Side-by-side throughput of the Python client (python/bench/bench.py) in one run: the sluiceway
# package and the Rust client (`sluiceway bench`) against a release Sluiceway broker, and
# confluent-kafka against Apache Kafka (bench/kafka.sh), for 100 B and 1 KiB values. `make
# bench-python` builds what it needs and calls this; by hand:
#
#   PYTHON=.venv-bench/bin/python KAFKA_SH=bench/kafka.sh bash python/bench/compare.sh
#
# PYTHON must have the sluiceway package (release build) and confluent-kafka installed.
# Prints bench.py's JSON lines (one per client and mode), the load average before and after,
# and leaves no process behind. MESSAGES_100 / MESSAGES_1K set the message counts, PARTITIONS
# the topics' partitions (default 4, as `sluiceway bench` and docs/benchmarks.md use),
# TOPIC_CONFIG a config of the Sluiceway topics (e.g. flush.policy=os: no fsync per append,
# like Kafka's default).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
KAFKA_SH="${KAFKA_SH:-$ROOT/bench/kafka.sh}"
SLUICEWAY="${SLUICEWAY:-$ROOT/target/release/sluiceway}"
MESSAGES_100="${MESSAGES_100:-1000000}"
MESSAGES_1K="${MESSAGES_1K:-300000}"
PARTITIONS="${PARTITIONS:-4}"
topic_config=()
[[ -n "${TOPIC_CONFIG:-}" ]] && topic_config=(--topic-config "$TOPIC_CONFIG")

[[ -x "$SLUICEWAY" ]] || { echo "compare.sh: $SLUICEWAY not found (cargo build --release -p sluiceway-broker)" >&2; exit 2; }
[[ -x "$KAFKA_SH" ]] || { echo "compare.sh: $KAFKA_SH not found (set KAFKA_SH)" >&2; exit 2; }

work="$(mktemp -d)"
broker_pid=""
cleanup() {
  [[ -n "$broker_pid" ]] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
  "$KAFKA_SH" stop "$work/kafka" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"$SLUICEWAY" broker --data-dir "$work/sluiceway" --listen 127.0.0.1:0 >"$work/broker.out" 2>"$work/broker.log" &
broker_pid=$!
for _ in $(seq 100); do
  grep -q '^listening on ' "$work/broker.out" 2>/dev/null && break
  sleep 0.1
done
sluiceway_bootstrap="$(sed -n 's/^listening on //p' "$work/broker.out" | head -1)"
[[ -n "$sluiceway_bootstrap" ]] || { echo "compare.sh: the broker did not start:" >&2; cat "$work/broker.log" >&2; exit 1; }
kafka_bootstrap="$("$KAFKA_SH" start "$work/kafka" | tail -1)"

echo "# $(date -u +%FT%TZ) $(nproc) cores; sluiceway topics: ${TOPIC_CONFIG:-default config}; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for size in 100 1024; do
  n="$MESSAGES_100"
  [[ "$size" == 1024 ]] && n="$MESSAGES_1K"
  "$PYTHON" "$ROOT/python/bench/bench.py" --json --target sluiceway --bootstrap "$sluiceway_bootstrap" \
    --size "$size" --messages "$n" --partitions "$PARTITIONS" --sluiceway "$SLUICEWAY" "${topic_config[@]}"
  "$PYTHON" "$ROOT/python/bench/bench.py" --json --target kafka --bootstrap "$kafka_bootstrap" \
    --size "$size" --messages "$n" --partitions "$PARTITIONS"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
