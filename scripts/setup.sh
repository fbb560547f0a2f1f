#!/usr/bin/env bash
# Installs what Sluiceway's build and tests need on a fresh machine, and nothing by hand.
# Idempotent: each step checks before it installs.
set -euo pipefail

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi

# protoc comes from the protoc-bin-vendored crate at build time; nothing to install for it.
echo "setup: ok"
