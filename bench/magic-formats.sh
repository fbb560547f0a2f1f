#!/usr/bin/env bash
# Produce throughput of the notes' magic 1 against Kafka's RecordBatch v2 (magic 2), and magic 2
# with the idempotent producer, at 100 B and 1 KiB, side by side against one release broker.
# Runs each configuration ROUNDS times, interleaved, so the ratios survive a noisy machine.
#
#   bash bench/magic-formats.sh            # ROUNDS=2 DURATION_S=8 by default
#
# Prints one line per run: size, configuration, messages/s, MB/s. Needs `cargo build --release
# -p sluiceway-broker` (done here when the binary is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
DURATION_S=${DURATION_S:-8}
BIN=target/release/sluiceway
[ -x "$BIN" ] || cargo build --release -p sluiceway-broker --bin sluiceway
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" broker --data-dir "$data" --listen "127.0.0.1:$port" --log warn > "$data.out" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$data" "$data.out"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$data.out" 2>/dev/null && break; sleep 0.1; done
run() { # size label flags...
  local size=$1 label=$2; shift 2
  local topic="m-$size-$label-$RANDOM"
  "$BIN" bench produce --bootstrap "127.0.0.1:$port" --topic "$topic" --partitions 4 \
    --size "$size" --duration-s "$DURATION_S" --acks all --json "$@" |
    SIZE=$size LABEL=$label python3 -c 'import json, os, sys; r = json.load(sys.stdin); print("%5s B  %-20s %11.0f msg/s %8.1f MB/s  errors %d" % (os.environ["SIZE"], os.environ["LABEL"], r["msgs_per_sec"], r["mb_per_sec"], r["errors"]))'
}
for round in $(seq "$ROUNDS"); do
  echo "# round $round"
  for size in 100 1024; do
    run "$size" magic-1 --message-format-version 1
    run "$size" magic-2 --message-format-version 2
    run "$size" magic-2-idempotent --message-format-version 2 --enable-idempotence
  done
done
