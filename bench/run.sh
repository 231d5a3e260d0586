#!/usr/bin/env bash
# Run every benchmark; each prints its ratios against the reference measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
for b in bench/*.sh; do
  [ "$b" = bench/run.sh ] && continue
  echo "== $b"
  "$b"
done
