#!/usr/bin/env bash
# The example image after a one-line change to the backend, from the new jar to the image in a
# registry and in dockerd: `mkimage --push` and `mkimage --load docker` (no tar) against
# `mkimage -o` + `push-image` and `mkimage -o` + `docker load` (the tar paths), interleaved,
# $BENCH_QUICK_RUNS runs each (default 21: every side takes under a second). Before every run
# the greeting changes and the jars are rebuilt (javac is not timed); each timed run is the rest
# of the example's pipeline (launcher, closure, layers: make) and then the image's way out.
# Nothing is deleted between runs (bench/lib.sh says why): the jar build's scratch files live in
# /dev/shm, each load's image is removed with the work dir at the end. Each registry side has a
# registry of its own; each direct side a layer cache of its own (the tar paths share the
# example's). Beside the dockerd figure, dockerd's own share: `docker load` of a new image of a
# few bytes. Targets: < 0.3 s to the registry, < 0.5 s into dockerd, and both at least 4x faster
# than their tar path.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)
for t in docker-registry docker; do
  command -v $t >/dev/null || { echo "bench/direct: $t is missing (scripts/setup.sh)" >&2; exit 1; }
done
bench_init direct
pids=()
# The images the loads make (each moves its tag on and leaves the one before): removed with $work.
loaded() {
  docker image inspect -f '{{.Id}}' agatha-back:direct agatha-back:tar strata-bench-load:direct \
    >> "$work/docker-images" 2>/dev/null || true
}
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  loaded
  bench_done
}
trap 'cat "$work/mkimage.log" >&2 2>/dev/null; cleanup' EXIT
scripts/services.sh docker

start_registry direct
start_registry tar

copy_example "$work/src"
OUT=$work/out
export STRATA_STORE_ROOT=$OUT/store
mk() { make -s -C examples/agatha "$@" OUT="$OUT" SRC="$work/src" DEBS_DIR="$work/debs" STRATA_BIN="$BIN" >/dev/null; }
jars() { TMPDIR=${BENCH_SCRATCH:-/dev/shm} mk jars; }
ARCH=$(dpkg --print-architecture)
# The example's mkimage command (examples/agatha/Makefile, step 7) without its output. Each
# direct side keeps a layer cache of its own, as a developer's build does: with one cache
# shared, the side that ran second found the changed layer already built by the other (a cache
# hit no engine had seen, which made `--load docker` ask dockerd about every image it holds).
mkimage_example() { # WAY (push or load: its cache), TAG, then the way out
  local cache=$OUT/layer-cache-$1 tag=$2; shift 2
  "$BIN/mkimage" "$OUT/layers.json" --name agatha-back --tag "$tag" --cache "$cache" \
    --architecture "$ARCH" \
    --contents "$OUT/app.json" --contents "$OUT/flyway.json" \
    --contents "$OUT/migrations.json" --contents "$OUT/runtime.json" \
    --extra-commands 'mkdir -p home' \
    --cmd /bin/bash --cmd -c \
    --cmd '/bin/flyway -configFiles=/home/flyway.conf migrate && /bin/agatha-back' \
    --workdir /home --expose 8080/tcp "$@" 2>>"$work/mkimage.log"
}

# Untimed: the .debs, the runtime, a first image everywhere (the layer cache filled, each
# registry and dockerd holding the unchanged layers).
echo "bench/direct: building the example once (untimed)" >&2
"$BIN/deb-lock" build --dry-run --cache "$work/debs" "$work/src/runtime.lock" >/dev/null
jars
mk image TAG=tar
"$BIN/push-image" "$OUT/agatha-back.tar" "127.0.0.1:$PORT_tar/agatha:tar" >/dev/null
docker load -q < "$OUT/agatha-back.tar" >/dev/null
mkimage_example push direct --push "127.0.0.1:$PORT_direct/agatha" >/dev/null
mkimage_example load direct --load docker
ls -l "$OUT/agatha-back.tar" >&2

# dockerd's own share, for scale: `docker load` of a two-layer image of a few bytes whose
# layers dockerd has not seen (a text file naming the run), made untimed before each run. What
# this takes varies from run to run of the bench on the same machine (by 0.2 s and more,
# always on both dockerd sides alike); the anchor shows it beside the figure.
small_image() {
  printf 'run %s\n' "$n" | "$BIN/store-add" --text --name "strata-bench-load-$n" - > "$OUT/small.json"
  "$BIN/mklayers" "$OUT/small.json" \
    | "$BIN/mkimage" - --name strata-bench-load --tag direct -o "$OUT/small.tar" 2>/dev/null
}
n=0
prepare() { # a new greeting, its jar (javac untimed, scratch in /dev/shm), then sync
  n=$((n + 1))
  loaded
  sed -i "s/GREETING = \"[^\"]*\"/GREETING = \"agatha, change $n\"/" \
    "$work/src/backend/src/agatha/Main.java"
  jars
  small_image
  sync
}
side "mkimage --push" \
  'mk "$OUT/layers.json" && mkimage_example push direct --push "127.0.0.1:$PORT_direct/agatha" >/dev/null'
side "mkimage -o + push-image" \
  'mk image TAG=tar && "$BIN/push-image" "$OUT/agatha-back.tar" "127.0.0.1:$PORT_tar/agatha:tar" >/dev/null'
side "mkimage --load docker" \
  'mk "$OUT/layers.json" && mkimage_example load direct --load docker'
side "mkimage -o + docker load" \
  'mk image TAG=tar && docker load -q < "$OUT/agatha-back.tar" >/dev/null'
# The mkimage step alone, for scale: the rest of each run is make (launcher, closure, layers).
side "make layers.json only" 'mk "$OUT/layers.json"'
side "docker load of a new 2-layer image" 'docker load -q < "$OUT/small.tar" >/dev/null'
# At the start of each pass (the page cache just emptied), every side once untimed: their
# inputs are the example's whole closure and dockerd's own files, more than a warm-up reads back.
on_turn() {
  untimed_round prepare "mkimage --push" "mkimage -o + push-image" \
    "mkimage --load docker" "mkimage -o + docker load" "make layers.json only" \
    "docker load of a new 2-layer image"
}
settle
interleave "$BENCH_QUICK_RUNS" prepare "mkimage --push" "mkimage -o + push-image" \
  "mkimage --load docker" "mkimage -o + docker load" "make layers.json only" \
  "docker load of a new 2-layer image"

echo "direct bench: jar-only change -> image in a registry / in dockerd (javac not timed)"
echo "  targets: < 0.3 s to the registry, < 0.5 s into dockerd, both >= 4x faster than the tar path"
record "jar-only change -> registry (tar path as the peer)" "mkimage --push" \
  "mkimage -o + push-image" "make layers.json only"
record "jar-only change -> dockerd (tar path as the peer)" "mkimage --load docker" \
  "mkimage -o + docker load" "make layers.json only" "docker load of a new 2-layer image"
machine
