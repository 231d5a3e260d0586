#!/usr/bin/env bash
# mkimage against nixpkgs' stream_layered_image.py on a >= 500 MB, >= 10k-file store in >= 30
# layers, each run $BENCH_QUICK_RUNS times (default 21: the sides take 0.7 to 4 s),
# interleaved, after `sync` and the same page-cache warm-up (the cache builds: from emptied
# caches, see below); both write their image to a file
# (the previous run's image file is removed first: one inode, not a mass deletion). Anchors: a
# one-pass `tar | sha256sum` of the same files (reading and hashing them once) and
# `tar | cat > /dev/null` (reading them). Then the cache (strata alone): a cold build filling a
# fresh cache of its own, and a build after one layer changed, $BENCH_QUICK_RUNS pairs; the
# caches are removed at the end.
# Needs root (the reference runs in a private mount namespace with the store bind-mounted at
# /nix/store). BENCH_FILES, BENCH_MB, BENCH_LAYERS change the size.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)
FILES=${BENCH_FILES:-10400}
MB=${BENCH_MB:-520}
LAYERS=${BENCH_LAYERS:-40}
REF=$(cd .. && pwd)/shared/reference/stream_layered_image.py
test -f "$REF" || { echo "bench/mkimage: $REF is missing" >&2; exit 1; }
bench_init mkimage
trap bench_done EXIT
root=$work/root
export STRATA_STORE_ROOT=$root
echo "bench/mkimage: generating $LAYERS store paths, $FILES files, ${MB} MB" >&2
python3 - "$work/src" "$FILES" "$MB" "$LAYERS" <<'PY'
import os, random, sys
root, files, mb, paths = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(11)
per = mb * 1024 * 1024 // files
block = os.urandom(1 << 20)
for i in range(files):
    d = os.path.join(root, "p%02d" % (i % paths), "d%02d" % (i % 17))
    os.makedirs(d, exist_ok=True)
    size = max(1, int(per * rng.uniform(0.2, 1.8)))
    off = rng.randrange(0, len(block))
    data = (block[off:] + block) * (size // len(block) + 1)
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(data[:size])
PY
paths=()
for p in "$work"/src/p*; do
  paths+=("$("$BIN/store-add" --print-path --name "$(basename "$p")" "$p")")
done
python3 -c 'import json,sys;print(json.dumps([[p] for p in sys.argv[1:]]))' "${paths[@]}" > "$work/layers.json"
mkdir -p "$work/cust"
python3 -c "import tarfile;tarfile.open('$work/cust/layer.tar','w').close()"
sha256sum "$work/cust/layer.tar" | cut -d' ' -f1 > "$work/cust/checksum"
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
json.dump({"store_dir": "/nix/store", "from_image": None,
           "store_layers": json.load(open(w + "/layers.json")),
           "customisation_layer": w + "/cust", "repo_tag": "bench:1",
           "created": "1970-01-01T00:00:01Z", "mtime": "1970-01-01T00:00:01Z",
           "uid": 0, "gid": 0, "uname": "root", "gname": "root",
           "architecture": "amd64", "os": "linux", "config": {}}, open(w + "/conf.json", "w"))
PY
names=(); for p in "${paths[@]}"; do names+=("$(basename "$p")"); done
mkdir -p /nix/store
store_bytes=$(tar -C "$root/nix/store" -cf - "${names[@]}" | wc -c)
warm() { rm -f "$work/ours.tar" "$work/ref.tar"; sync; tar -C "$root/nix/store" -cf - "${names[@]}" | cat > /dev/null; }
side "mkimage" '"$BIN/mkimage" "$work/layers.json" --name bench --tag 1 -o "$work/ours.tar"'
run_ref() {
  unshare -m sh -c "mount --bind '$root/nix/store' /nix/store && python3 '$REF' '$work/conf.json' > '$work/ref.tar' 2>/dev/null"
}
side "stream_layered_image.py" run_ref
side "tar | sha256sum" 'tar -C "$root/nix/store" -cf - "${names[@]}" | sha256sum > /dev/null'
side "tar | cat" 'tar -C "$root/nix/store" -cf - "${names[@]}" | cat > /dev/null'
for s in mkimage stream_layered_image.py "tar | sha256sum" "tar | cat"; do side_bytes "$s" "$store_bytes"; done

# The cache: a cold build fills a fresh one; then one layer changes (a new path replaces the last).
mkdir -p "$work/changed" && cp -r "$work/src/p00/." "$work/changed/" && echo changed > "$work/changed/stamp"
newpath=$("$BIN/store-add" --print-path --name p00 "$work/changed")
python3 -c 'import json,sys;l=json.load(open(sys.argv[1]));l[-1]=[sys.argv[2]];print(json.dumps(l))' "$work/layers.json" "$newpath" > "$work/layers2.json"
k=0
side "mkimage --cache, cold" 'k=$((k + 1)); "$BIN/mkimage" "$work/layers.json" --name bench --tag 1 --cache "$work/cache-$k" -o "$work/c1.tar" -v 2> "$work/c1.log"'
side "mkimage --cache, one layer changed" '"$BIN/mkimage" "$work/layers2.json" --name bench --tag 1 --cache "$work/cache-$k" -o "$work/c2.tar" -v 2> "$work/c2.log"'
# The cache builds write a new cache and image each run (1 GB of new page cache): each starts
# from emptied caches (fresh_memory, bench/lib.sh says why), then the same warm-up, and the
# changed build's cache (the one the cold build just filled) read back too.
warm_cache() {
  rm -f "$work/c1.tar" "$work/c2.tar"
  fresh_memory
  # ($s: the side about to run, interleave_pass's loop variable)
  if [ "$s" = "mkimage --cache, one layer changed" ]; then
    find "$work/cache-$k" -type f -exec cat {} + > /dev/null
  fi
  warm
}
settle
for pass in $(seq "$BENCH_PASSES"); do
  turn
  interleave_pass "$pass" "$BENCH_QUICK_RUNS" warm mkimage stream_layered_image.py "tar | sha256sum" "tar | cat"
  interleave_pass "$pass" "$BENCH_QUICK_RUNS" warm_cache "mkimage --cache, cold" "mkimage --cache, one layer changed"
done
built=$(grep -c 'built)' "$work/c2.log" || true)
cached=$(grep -c 'cached)' "$work/c2.log" || true)
read_bytes=$(sed -n 's/.*(\([0-9]*\) bytes of store files read).*/\1/p' "$work/c2.log")
total_bytes=$(sed -n 's/.*(\([0-9]*\) bytes of store files read).*/\1/p' "$work/c1.log")

echo "mkimage bench: $LAYERS layers, $FILES files, $((store_bytes / 1000000)) MB of store files (as a tar)"
record "image from the store" mkimage stream_layered_image.py "tar | sha256sum" "tar | cat"
record "cache, one layer changed (after a cold build)" "mkimage --cache, one layer changed" - "mkimage --cache, cold"
echo "    one layer changed: $built layer(s) re-read, $cached from the cache, $((${read_bytes:-0} / 1000000)) of $((${total_bytes:-0} / 1000000)) MB read from the store"
machine
