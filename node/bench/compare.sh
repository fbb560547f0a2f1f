#!/usr/bin/env bash
# `make bench-node`: the Node package beside the Rust client, then kafkajs beside them, in one run.
# For each value size: bench.mjs on a release broker it starts (Node, then `sluiceway bench`, same
# workload); then, when a Kafka is at hand, kafkajs against it. The Sluiceway broker is stopped
# before Kafka starts, so the two never share the cores. One JSON line per client and mode.
#
# Environment: BENCH_MESSAGES (default 1000000), BENCH_SIZES (default "100 1024"), BENCH_READ=1
# (consumers read every value, key and offset: bench.mjs --read),
# KAFKA=HOST:PORT (a running Kafka), else KAFKA_SH (default bench/kafka.sh) starts one in a temp
# dir and stops it after; with neither (or no java) the kafkajs runs are skipped, saying so.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BIN=target/release/sluiceway
MESSAGES=${BENCH_MESSAGES:-1000000}
SIZES=${BENCH_SIZES:-100 1024}
KAFKA=${KAFKA:-}
KAFKA_SH=${KAFKA_SH:-bench/kafka.sh}
kafka_dir=""
cleanup() {
  if [[ -n "$kafka_dir" ]]; then
    "$KAFKA_SH" stop "$kafka_dir" >&2
    rm -rf "$kafka_dir"
  fi
}
trap cleanup EXIT

for size in $SIZES; do
  node node/bench/bench.mjs --sluiceway "$BIN" --start-broker --size "$size" --messages "$MESSAGES" ${BENCH_READ:+--read} --json
done
if [[ -z "$KAFKA" ]]; then
  if [[ -x "$KAFKA_SH" ]] && command -v java >/dev/null; then
    kafka_dir=$(mktemp -d "${TMPDIR:-/tmp}/sluiceway-kafka-XXXXXX")
    KAFKA=$("$KAFKA_SH" start "$kafka_dir" | tail -n 1)
  else
    echo "compare.sh: no KAFKA=HOST:PORT and no $KAFKA_SH (or no java): kafkajs runs skipped" >&2
    exit 0
  fi
fi
for size in $SIZES; do
  node node/bench/bench.mjs --target kafka --bootstrap "$KAFKA" --size "$size" --messages "$MESSAGES" ${BENCH_READ:+--read} --json
done
