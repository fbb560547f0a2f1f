#!/usr/bin/env bash
# `make test-swift`: the checks possible without a Swift toolchain, and `swift test` with one.
#   1. uniffi-bindgen regenerates the Swift, the C header and uniffi's module map from the debug
#      library; they must equal the committed ones (`check.sh --update` rewrites them).
#   2. The header parses as C (gcc, with Clang's nullability keywords defined away).
#   3. With `swift` on PATH: `swift test` against the debug library (it starts its own broker).
# Prints a closing "N passed, N failed" line.
set -euo pipefail
cd "$(dirname "$0")"
root=../..
bindgen=${BINDGEN:-target/debug/uniffi-bindgen}
lib=${UNIFFI_LIB:-target/debug/libsluiceway_uniffi.so}
passed=0
failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
fail() { echo "FAILED: $1" >&2; failed=$((failed + 1)); }

gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
(cd "$root" && "$bindgen" generate --library "$lib" --language swift --no-format --out-dir "$gen")
pairs=(
  "Sluiceway.swift:Sources/Sluiceway/Sluiceway.swift"
  "SluicewayFFI.h:Sources/SluicewayFFI/SluicewayFFI.h"
  "SluicewayFFI.modulemap:Sources/SluicewayFFI/SluicewayFFI.modulemap"
)
for pair in "${pairs[@]}"; do
  src=${pair%%:*}
  dst=${pair#*:}
  if [[ ${1:-} == --update ]]; then
    cp "$gen/$src" "$dst"
  fi
  if diff -q "$gen/$src" "$dst" >/dev/null; then
    ok "$dst matches the generated $src"
  else
    fail "$dst differs from the generated $src (run bindings/swift/check.sh --update and commit)"
  fi
done

if gcc -D_Nullable= -D_Nonnull= -Wno-pragma-once-outside-header -fsyntax-only -x c Sources/SluicewayFFI/SluicewayFFI.h; then
  ok "SluicewayFFI.h parses as C"
else
  fail "SluicewayFFI.h does not parse as C"
fi

if command -v swift >/dev/null 2>&1; then
  libdir=$(cd "$root" && cd "$(dirname "$lib")" && pwd)
  golden=$(cd "$root/testdata/golden" && pwd)
  if SLUICEWAY_BIN="$libdir/sluiceway" SLUICEWAY_GOLDEN="$golden" LD_LIBRARY_PATH="$libdir" swift test -Xlinker -L"$libdir"; then
    ok "swift test"
  else
    fail "swift test"
  fi
else
  echo "swift not on PATH: swift test not run (the checks above still ran)"
fi

echo "$passed passed, $failed failed"
((failed == 0))
