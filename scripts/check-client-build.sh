#!/usr/bin/env bash
# Keeps the Cargo feature split of `sluiceway-core` from rotting (docs/ARCHITECTURE.md, "Cargo
# features"). `make test` runs it before the tests.
#   1. The client-only build (`--no-default-features --features client`, what every language
#      binding links) builds without warnings: cfg-gated code typically rots into unused imports
#      or a client path reaching a server-only item.
#   2. Its normal (non-dev, non-build) dependency tree has none of the server's crates. A failure
#      names the crate and shows what pulls it in.
#   3. The server-only build (`--no-default-features --features server`) builds too: the server
#      side must not call the client.
# Cheap: it shares the workspace's target directory, so after the first run only sluiceway-core
# is rebuilt when it changed.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
# The registry's etcd client, the storage engine's mmap, tonic's server router (axum) and the
# benchmark's histograms: none of them belongs in a client.
forbidden=(etcd-client memmap2 axum hdrhistogram)
client=(-p sluiceway-core --no-default-features --features client --locked)
server=(-p sluiceway-core --no-default-features --features server --locked)

# Builds with the given arguments and fails if sluiceway's own crates warn (cargo replays cached
# warnings on a no-op build, so this holds on every run, not only after a change).
build_without_warnings() {
  local log
  log=$(mktemp)
  if ! "$CARGO" build "$@" 2>&1 | tee "$log" >&2; then
    rm -f "$log"
    echo "check-client-build: 'cargo build $*' failed" >&2
    exit 1
  fi
  if grep -q '^warning: `sluiceway-' "$log"; then
    rm -f "$log"
    echo "check-client-build: 'cargo build $*' has warnings (see above); a feature-gated item probably left something unused" >&2
    exit 1
  fi
  rm -f "$log"
}

build_without_warnings "${client[@]}"

tree=$("$CARGO" tree "${client[@]}" -e normal --prefix none)
failed=0
for crate in "${forbidden[@]}"; do
  if grep -q "^${crate} v" <<<"$tree"; then
    echo "check-client-build: the client-only build of sluiceway-core links '${crate}', a server-side crate. What pulls it in:" >&2
    "$CARGO" tree "${client[@]}" -e normal -i "$crate" >&2 || true
    failed=1
  fi
done
if [ "$failed" -ne 0 ]; then
  echo "check-client-build: gate the code that needs it behind the 'server' (or 'bench') feature of sluiceway-core" >&2
  exit 1
fi
crates=$(sed 's/ (\*)$//' <<<"$tree" | sort -u | wc -l)
echo "check-client-build: client-only build ok: ${crates} crates, none of ${forbidden[*]}"

build_without_warnings "${server[@]}"
echo "check-client-build: server-only build ok"

# The UniFFI library (Kotlin, Swift) resolves sluiceway-core with the client feature only.
uniffi_tree=$("$CARGO" tree -p sluiceway-uniffi -e normal --prefix none --locked)
for crate in "${forbidden[@]}"; do
  if grep -q "^${crate} v" <<<"$uniffi_tree"; then
    echo "check-client-build: sluiceway-uniffi links '${crate}', a server-side crate" >&2
    exit 1
  fi
done
echo "check-client-build: sluiceway-uniffi links none of ${forbidden[*]}"
