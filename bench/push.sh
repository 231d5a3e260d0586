#!/usr/bin/env bash
# push-image against `skopeo copy` of the same image to a docker-registry on 127.0.0.1: a
# first push (empty registry) and a push after a one-line change, $BENCH_QUICK_RUNS times
# (default 21: most pushes take well under a second), each run into fresh registries (one per
# tool, same config, filesystem storage in a dir of their own for that run, so neither finds or
# mounts the other's blobs, and nothing is deleted between runs), the tools taking turns (which
# goes first alternates), each timed run after `sync` and the image read into the page cache.
#   the comparison: push-image --compress gzip (with a fresh --cache each run) against skopeo
#     copy oci-archive:… docker://… --dest-compress-format gzip at the same level: same work
#   strata alone: push-image uncompressed (its default), which the registry stores as is
#   anchor: `cat` of the image (reading it)
# Prints the medians and spread, and for the last run the bytes each registry stored.
# BENCH_MB (default 64) and BENCH_LAYERS (default 8) change the size of the generated image;
# BENCH_IMAGE=agatha pushes the example image instead (make -C examples/agatha image; the
# one-line change is the backend's greeting, as in bench/example.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)
MB=${BENCH_MB:-64}
LAYERS=${BENCH_LAYERS:-8}
for t in docker-registry skopeo; do
  command -v $t >/dev/null || { echo "bench/push: $t is missing (scripts/setup.sh)" >&2; exit 1; }
done
bench_init push
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; bench_done; }
trap cleanup EXIT
export STRATA_STORE_ROOT=$work/root
# push-image --compress gzip deflates at this level (crates/core/src/oci/compression.rs GZIP_LEVEL);
# skopeo is given the same.
GZIP_LEVEL=$(sed -n 's/^pub const GZIP_LEVEL: u32 = \([0-9]*\);/\1/p' crates/core/src/oci/compression.rs)
[ -n "$GZIP_LEVEL" ] || { echo "bench: GZIP_LEVEL not found in crates/core/src/oci/compression.rs" >&2; exit 1; }

stored() { # bytes of blob files in a registry's storage
  [ -d "$1/docker/registry/v2/blobs" ] || { echo 0; return; }
  find "$1/docker/registry/v2/blobs" -name data -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}'
}

if [ "${BENCH_IMAGE:-}" = agatha ]; then
  echo "bench/push: building the example image twice (untimed)" >&2
  BINABS=$BIN
  copy_example "$work/src"
  mk() { make -s -C examples/agatha "$@" OUT="$work/out" SRC="$work/src" DEBS_DIR="$work/debs" STRATA_BIN="$BINABS" >/dev/null; }
  mk image TAG=1
  cp "$work/out/agatha-back.tar" "$work/v1.tar"
  sed -i 's/GREETING = "agatha"/GREETING = "agatha, rebuilt"/' "$work/src/backend/src/agatha/Main.java"
  mk jars
  mk image TAG=2
  cp "$work/out/agatha-back.tar" "$work/v2.tar"
  LAYERS=$(python3 -c 'import json,sys;print(len(json.load(open(sys.argv[1]))) - 1)' "$work/out/layers.json")
else
  echo "bench/push: generating $LAYERS store paths, ${MB} MB (half text-like, half random)" >&2
  python3 - "$work/src" "$MB" "$LAYERS" <<'PY'
import os, random, sys, base64
root, mb, paths = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(5)
per = mb * 1024 * 1024 // paths
for i in range(paths):
    d = os.path.join(root, "p%02d" % i)
    os.makedirs(d, exist_ok=True)
    raw = rng.randbytes(per // 2)
    with open(os.path.join(d, "random.bin"), "wb") as f:
        f.write(raw)
    with open(os.path.join(d, "text.txt"), "wb") as f:
        f.write(base64.b64encode(rng.randbytes(per * 3 // 8))[: per // 2])
os.makedirs(os.path.join(root, "app"), exist_ok=True)
with open(os.path.join(root, "app", "config.txt"), "w") as f:
    f.write("greeting = hello\n")
PY
  add() { "$BIN/store-add" --name "$1" "$2" | python3 -c 'import json,sys;print(json.load(sys.stdin)["path"])'; }
  paths=()
  for p in "$work"/src/p*; do paths+=("$(add "$(basename "$p")" "$p")"); done
  build() { # APP-SRC OUT TAG
    local app; app=$(add app "$1")
    python3 -c 'import json,sys;print(json.dumps([[p] for p in sys.argv[1:]]))' "${paths[@]}" "$app" > "$work/layers.json"
    "$BIN/mkimage" "$work/layers.json" --name bench --tag "$3" -o "$2"
  }
  build "$work/src/app" "$work/v1.tar" 1
  cp -r "$work/src/app" "$work/app2" && echo "greeting = changed" > "$work/app2/config.txt"
  build "$work/app2" "$work/v2.tar" 2
fi

stop_registry() { # NAME
  local pid; eval "pid=\$PID_$1"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
push_ours() { # IMAGE PORT TAG [FLAGS]
  local image=$1 port=$2 tag=$3; shift 3
  "$BIN/push-image" "$image" "127.0.0.1:$port/bench:$tag" --json "$@" > "$work/out.json"
}
push_skopeo() { # IMAGE PORT TAG
  skopeo copy -q --dest-tls-verify=false --dest-compress-format gzip --dest-compress-level "$GZIP_LEVEL" "oci-archive:$1" "docker://127.0.0.1:$2/bench:$3" >/dev/null
}
side "push-image --compress gzip, first" 'push_ours "$work/v1.tar" "$PORT_gz" 1 --compress gzip --cache "$work/pushcache-$run"'
side "skopeo copy, first" 'push_skopeo "$work/v1.tar" "$PORT_skopeo" 1'
side "push-image --compress gzip, change" 'push_ours "$work/v2.tar" "$PORT_gz" 2 --compress gzip --cache "$work/pushcache-$run"'
side "skopeo copy, change" 'push_skopeo "$work/v2.tar" "$PORT_skopeo" 2'
side "push-image, first" 'push_ours "$work/v1.tar" "$PORT_plain" 1'
side "push-image, change" 'push_ours "$work/v2.tar" "$PORT_plain" 2'
side "cat image" 'cat "$work/v1.tar" > /dev/null'
image_bytes=$(stat -c %s "$work/v1.tar")
for s in "push-image --compress gzip, first" "skopeo copy, first" "push-image, first" "cat image"; do
  side_bytes "$s" "$image_bytes"
done
warm() { sync; cat "$work/v1.tar" "$work/v2.tar" > /dev/null; }
settle
for pass in $(seq "$BENCH_PASSES"); do
  turn
  for run in $(pass_runs "$pass" "$BENCH_QUICK_RUNS"); do
    for r in gz skopeo plain; do start_registry "$r" "$work/$r-storage-$run"; done
    if [ $((run % 2)) = 1 ]; then
      order=("push-image --compress gzip, first" "skopeo copy, first" "push-image --compress gzip, change" "skopeo copy, change")
    else
      order=("skopeo copy, first" "push-image --compress gzip, first" "skopeo copy, change" "push-image --compress gzip, change")
    fi
    for s in "${order[@]}" "push-image, first" "push-image, change" "cat image"; do
      warm
      time_once "$s"
    done
    stored_gz=$(stored "$work/gz-storage-$run") stored_skopeo=$(stored "$work/skopeo-storage-$run") stored_plain=$(stored "$work/plain-storage-$run")
    layer_types() { # PORT: how the layers of bench:2 are stored
      curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "http://127.0.0.1:$1/v2/bench/manifests/2" |
        python3 -c 'import json,sys,collections;print(dict(collections.Counter(l["mediaType"].rsplit(".",1)[-1] for l in json.load(sys.stdin)["layers"])))'
    }
    types="push-image --compress gzip $(layer_types "$PORT_gz"), skopeo $(layer_types "$PORT_skopeo"), push-image $(layer_types "$PORT_plain")"
    stop_registry gz; stop_registry skopeo; stop_registry plain
  done
done

echo "push bench: image $((image_bytes / 1000000)) MB, $((LAYERS + 1)) store layers + customisation, registry on 127.0.0.1"
record "first push, gzip both" "push-image --compress gzip, first" "skopeo copy, first" "cat image"
record "push after a one-line change, gzip both" "push-image --compress gzip, change" "skopeo copy, change"
record "first push, push-image uncompressed (strata alone)" "push-image, first" -
record "push after a one-line change, uncompressed (strata alone)" "push-image, change" -
echo "    bytes the registries stored (last run, both pushes): push-image --compress gzip $stored_gz, skopeo $stored_skopeo, push-image uncompressed $stored_plain"
echo "    layer media types: $types"
machine
