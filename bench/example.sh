#!/usr/bin/env bash
# The example image, from jar to `docker load`: a full build against a rebuild after a one-line
# change to the backend (javac is not timed), $BENCH_EXAMPLE_RUNS pairs (default 7: a full build
# takes some 5 s, and each pair needs two untimed jar builds), each pair in an output dir (and store) of its own, after `sync`; the dirs
# are removed at the end, not between runs (bench/lib.sh says why), and the jar builds' scratch
# files live in /dev/shm, so that removing them frees no inodes on the disk measured. Targets:
# the rebuild under 2 s and under a fifth of the full build. strata alone (no peer): the full
# build is the anchor.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)
bench_init example
trap bench_done EXIT
scripts/services.sh docker
# The images each load makes (the tag moves on, the one before stays): removed with $work.
loaded() { docker image inspect -f '{{.Id}}' agatha-back:bench >> "$work/docker-images" 2>/dev/null || true; }
copy_example "$work/src"
cp "$work/src/backend/src/agatha/Main.java" "$work/Main.java.orig"
i=0   # the pair being measured: its own output dir and store
mk() { make -s -C examples/agatha "$@" OUT="$work/out-$i" SRC="$work/src" DEBS_DIR="$work/debs" STRATA_BIN="$BIN" TAG=bench >/dev/null; }
jars() { TMPDIR=${BENCH_SCRATCH:-/dev/shm} mk jars; }

# Untimed: the locked .debs downloaded (and checked) into the cache.
"$BIN/deb-lock" build --dry-run --cache "$work/debs" "$work/src/runtime.lock" >/dev/null
side "full build" 'mk load'
side "rebuild after a one-line change" 'mk load'
# After each pass's emptied page cache, the .debs read back in before the first full build
# (every other build finds them where the one before left them).
on_turn() { find "$work/debs" -type f -exec cat {} + > /dev/null; }
settle
pairs=${BENCH_EXAMPLE_RUNS:-7}
for pass in $(seq "$BENCH_PASSES"); do
  turn
  for i in $(pass_runs "$pass" "$pairs"); do
    cp "$work/Main.java.orig" "$work/src/backend/src/agatha/Main.java"
    jars
    sync
    time_once "full build"
    loaded
    sed -i 's/GREETING = "agatha"/GREETING = "agatha, rebuilt"/' "$work/src/backend/src/agatha/Main.java"
    jars
    sync
    time_once "rebuild after a one-line change"
    loaded
  done
done

echo "example bench: jar -> docker load (javac not timed; targets: rebuild < 2 s, < 0.20 of the full build)"
record "rebuild after a one-line change (full build as the anchor)" "rebuild after a one-line change" - "full build"
machine
