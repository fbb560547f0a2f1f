#!/usr/bin/env bash
# Prints Maven Surefire's totals as one closing line, `Kotlin: N passed, N failed[, N skipped]`,
# because `mvn -q` (quiet, so CI logs are not buried in downloads) prints no summary of its own.
# Usage: scripts/surefire-summary.sh DIR (the surefire-reports directory). Exits 1 on failures.
set -euo pipefail
dir=${1:?usage: surefire-summary.sh REPORTS_DIR}
shopt -s nullglob
reports=("$dir"/TEST-*.xml)
if ((${#reports[@]} == 0)); then
  echo "surefire-summary: no reports in $dir" >&2
  exit 1
fi
tests=0 failed=0 skipped=0
for r in "${reports[@]}"; do
  # The <testsuite …> element's counters (first match of each in the file).
  t=$(grep -o 'tests="[0-9]*"' "$r" | head -n1 | tr -dc 0-9)
  e=$(grep -o 'errors="[0-9]*"' "$r" | head -n1 | tr -dc 0-9)
  f=$(grep -o 'failures="[0-9]*"' "$r" | head -n1 | tr -dc 0-9)
  s=$(grep -o 'skipped="[0-9]*"' "$r" | head -n1 | tr -dc 0-9)
  tests=$((tests + t)) failed=$((failed + e + f)) skipped=$((skipped + s))
done
passed=$((tests - failed - skipped))
if ((skipped > 0)); then
  echo "Kotlin: $passed passed, $failed failed, $skipped skipped"
else
  echo "Kotlin: $passed passed, $failed failed"
fi
((failed == 0))
