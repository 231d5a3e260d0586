#!/usr/bin/env bash
# The example image, from jar to `docker load`: a full build against a rebuild after a one-line
# change to the backend (javac is not timed), $BENCH_EXAMPLE_RUNS pairs (default 3: a full build
# takes well over 10 s), each from a fresh output dir, after `sync`. Targets: the rebuild under
# 2 s and under a fifth of the full build. strata alone (no peer): the full build is the anchor.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)
bench_init example
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
scripts/services.sh docker
cp -R examples/agatha "$work/src"
rm -rf "$work/src/build"
cp "$work/src/backend/src/agatha/Main.java" "$work/Main.java.orig"
mk() { make -s -C examples/agatha "$@" OUT="$work/out" SRC="$work/src" DEBS_DIR="$work/debs" STRATA_BIN="$BIN" TAG=bench >/dev/null; }

# Untimed: the locked .debs downloaded (and checked) into the cache.
"$BIN/deb-lock" build --dry-run --cache "$work/debs" "$work/src/runtime.lock" >/dev/null
side "full build" 'mk load'
side "rebuild after a one-line change" 'mk load'
for _ in $(seq "${BENCH_EXAMPLE_RUNS:-3}"); do
  cp "$work/Main.java.orig" "$work/src/backend/src/agatha/Main.java"
  chmod -R u+w "$work/out" 2>/dev/null || true; rm -rf "$work/out"
  mk jars
  sync
  time_once "full build"
  sed -i 's/GREETING = "agatha"/GREETING = "agatha, rebuilt"/' "$work/src/backend/src/agatha/Main.java"
  mk jars
  sync
  time_once "rebuild after a one-line change"
done
docker rmi -f agatha-back:bench >/dev/null 2>&1 || true

echo "example bench: jar -> docker load (javac not timed; targets: rebuild < 2 s, < 0.20 of the full build)"
record "rebuild after a one-line change (full build as the anchor)" "rebuild after a one-line change" - "full build"
machine
