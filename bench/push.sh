#!/usr/bin/env bash
# push-image against `skopeo copy` of the same image to a docker-registry on 127.0.0.1,
# measured in the same run: a first push (empty registry) and a push after a one-line change.
# Each tool gets a registry of its own (same config, filesystem storage), so neither finds or
# mounts the other's blobs. Prints per push: wall time, blob bytes uploaded (push-image's
# --json summary, and for both tools the bytes the registry stored: its blob files, new since
# the push before).
#   push-image (uncompressed, the default) and push-image --compress gzip --cache DIR
#   skopeo copy oci-archive:… docker://… (skopeo gzips uncompressed layers by default)
# BENCH_MB (default 64) and BENCH_LAYERS (default 8) change the size of the generated image;
# BENCH_IMAGE=agatha pushes the example image instead (make -C examples/agatha image; the
# one-line change is the backend's greeting, as in bench/example.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-target}/release
MB=${BENCH_MB:-64}
LAYERS=${BENCH_LAYERS:-8}
for t in docker-registry skopeo; do
  command -v $t >/dev/null || { echo "bench/push: $t is missing (scripts/setup.sh)" >&2; exit 1; }
done
work=$(mktemp -d /var/tmp/strata-bench-push.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
export STRATA_STORE_ROOT=$work/root

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
stored() { # bytes of blob files in a registry's storage
  [ -d "$1/docker/registry/v2/blobs" ] || { echo 0; return; }
  find "$1/docker/registry/v2/blobs" -name data -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}'
}
start_registry() { # NAME -> sets PORT_<NAME>
  local name=$1 port; port=$(free_port)
  cat > "$work/$name.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/$name-storage
http:
  addr: 127.0.0.1:$port
YML
  docker-registry serve "$work/$name.yml" > "$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
  eval "PORT_$name=$port"
}

if [ "${BENCH_IMAGE:-}" = agatha ]; then
  echo "bench/push: building the example image twice (untimed)" >&2
  BINABS=$(cd "$BIN" && pwd)
  cp -R examples/agatha "$work/src"; rm -rf "$work/src/build"
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

start_registry ours; start_registry skopeo; start_registry oursgz
results=()
run_ours() { # LABEL IMAGE PORT TAG STORAGE [FLAGS]
  local label=$1 image=$2 port=$3 tag=$4 storage=$5; shift 5
  local before t0 t1 sent after
  before=$(stored "$storage")
  t0=$(now); "$BIN/push-image" "$image" "127.0.0.1:$port/bench:$tag" --json "$@" > "$work/out.json"; t1=$(now)
  after=$(stored "$storage")
  sent=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["uploadedBytes"])' "$work/out.json")
  results+=("$label|$(elapsed "$t0" "$t1")|$sent|$((after - before))")
}
run_skopeo() { # LABEL IMAGE PORT TAG STORAGE
  local label=$1 image=$2 port=$3 tag=$4 storage=$5
  local before t0 t1 after
  before=$(stored "$storage")
  t0=$(now); skopeo copy -q --dest-tls-verify=false "oci-archive:$image" "docker://127.0.0.1:$port/bench:$tag" >/dev/null; t1=$(now)
  after=$(stored "$storage")
  results+=("$label|$(elapsed "$t0" "$t1")|-|$((after - before))")
}
run_ours   "push-image, first push"              "$work/v1.tar" "$PORT_ours"   1 "$work/ours-storage"
run_ours   "push-image, same image again"        "$work/v1.tar" "$PORT_ours"   1 "$work/ours-storage"
run_ours   "push-image, after a one-line change" "$work/v2.tar" "$PORT_ours"   2 "$work/ours-storage"
run_ours   "push-image --compress gzip, first"   "$work/v1.tar" "$PORT_oursgz" 1 "$work/oursgz-storage" --compress gzip --cache "$work/pushcache"
run_ours   "push-image --compress gzip, change"  "$work/v2.tar" "$PORT_oursgz" 2 "$work/oursgz-storage" --compress gzip --cache "$work/pushcache"
run_skopeo "skopeo copy, first push"             "$work/v1.tar" "$PORT_skopeo" 1 "$work/skopeo-storage"
run_skopeo "skopeo copy, same image again"       "$work/v1.tar" "$PORT_skopeo" 1 "$work/skopeo-storage"
run_skopeo "skopeo copy, after a one-line change" "$work/v2.tar" "$PORT_skopeo" 2 "$work/skopeo-storage"

image_bytes=$(stat -c %s "$work/v1.tar")
layer_types() { # PORT: how the layers of bench:2 are stored
  curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://127.0.0.1:$1/v2/bench/manifests/2" |
    python3 -c 'import json,sys,collections;print(dict(collections.Counter(l["mediaType"].rsplit(".",1)[-1] for l in json.load(sys.stdin)["layers"])))'
}
echo "  layer media types: push-image $(layer_types "$PORT_ours"), push-image --compress gzip $(layer_types "$PORT_oursgz"), skopeo $(layer_types "$PORT_skopeo")" > "$work/types"
python3 - "$image_bytes" "$LAYERS" "${results[@]}" <<'PY'
import os, sys
size, layers, rows = int(sys.argv[1]), int(sys.argv[2]), [r.split("|") for r in sys.argv[3:]]
print(f"push bench: image {size/1e6:.1f} MB, {layers + 1} store layers + customisation, registry on 127.0.0.1"
      f" ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end)")
print(f"  {'':38} {'seconds':>8} {'sent (--json)':>14} {'stored by registry':>19}")
t = {}
for label, secs, sent, stored in rows:
    t[label] = float(secs)
    sent = f"{int(sent):,}" if sent != "-" else "-"
    print(f"  {label:38} {float(secs):8.3f} {sent:>14} {int(stored):>19,}")
def ratio(a, b):
    return f"{t[a] / t[b]:.2f}" if t[b] > 0 else "n/a"
print(f"  first push, push-image / skopeo copy: {ratio('push-image, first push', 'skopeo copy, first push')}"
      f" (push-image --compress gzip: {ratio('push-image --compress gzip, first', 'skopeo copy, first push')})")
print(f"  after a change, push-image / skopeo copy: {ratio('push-image, after a one-line change', 'skopeo copy, after a one-line change')}")
PY
cat "$work/types"
