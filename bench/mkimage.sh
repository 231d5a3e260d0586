#!/usr/bin/env bash
# mkimage against nixpkgs' stream_layered_image.py and a one-pass `tar | sha256sum` of the same
# files, on a >= 500 MB, >= 10k-file store in >= 30 layers, measured in the same run. Prints:
#   mkimage / stream_layered_image.py         target <= 0.5
#   mkimage / tar | sha256sum                 target <= 1.2
#   second build with the cache, one layer changed: layers re-read and time
# Needs root (the reference runs in a private mount namespace with the store bind-mounted at
# /nix/store). BENCH_FILES, BENCH_MB, BENCH_LAYERS change the size.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-target}/release
FILES=${BENCH_FILES:-10400}
MB=${BENCH_MB:-520}
LAYERS=${BENCH_LAYERS:-40}
REF=$(cd .. && pwd)/shared/reference/stream_layered_image.py
test -f "$REF" || { echo "bench/mkimage: $REF is missing" >&2; exit 1; }
work=$(mktemp -d /var/tmp/strata-bench-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
export STRATA_STORE_ROOT=$root

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }

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
# Warm the page cache for everyone.
tar -C "$root/nix/store" -cf - "${names[@]}" | cat > /dev/null
mkdir -p /nix/store

t0=$(now); "$BIN/mkimage" "$work/layers.json" --name bench --tag 1 -o "$work/ours.tar"; t1=$(now)
ours=$(elapsed "$t0" "$t1"); rm -f "$work/ours.tar"

t0=$(now)
unshare -m sh -c "mount --bind '$root/nix/store' /nix/store && python3 '$REF' '$work/conf.json' > '$work/ref.tar' 2>/dev/null"
t1=$(now)
ref=$(elapsed "$t0" "$t1"); rm -f "$work/ref.tar"

t0=$(now); tar -C "$root/nix/store" -cf - "${names[@]}" | sha256sum > /dev/null; t1=$(now)
tarsum=$(elapsed "$t0" "$t1")

# Again, so the order of the three does not favour anyone (best of two each).
t0=$(now); "$BIN/mkimage" "$work/layers.json" --name bench --tag 1 -o "$work/ours.tar"; t1=$(now)
ours=$(python3 -c "print(min($ours, $(elapsed "$t0" "$t1")))"); rm -f "$work/ours.tar"
t0=$(now); tar -C "$root/nix/store" -cf - "${names[@]}" | sha256sum > /dev/null; t1=$(now)
tarsum=$(python3 -c "print(min($tarsum, $(elapsed "$t0" "$t1")))")

# The cache: a cold build fills it; then one layer changes (a new path replaces the last).
cache=$work/cache
t0=$(now); "$BIN/mkimage" "$work/layers.json" --name bench --tag 1 --cache "$cache" -o "$work/c1.tar" -v 2> "$work/c1.log"; t1=$(now)
cold=$(elapsed "$t0" "$t1"); rm -f "$work/c1.tar"
mkdir -p "$work/changed" && cp -r "$work/src/p00/." "$work/changed/" && echo changed > "$work/changed/stamp"
newpath=$("$BIN/store-add" --print-path --name p00 "$work/changed")
python3 -c 'import json,sys;l=json.load(open(sys.argv[1]));l[-1]=[sys.argv[2]];print(json.dumps(l))' "$work/layers.json" "$newpath" > "$work/layers2.json"
t0=$(now); "$BIN/mkimage" "$work/layers2.json" --name bench --tag 1 --cache "$cache" -o "$work/c2.tar" -v 2> "$work/c2.log"; t1=$(now)
warm=$(elapsed "$t0" "$t1"); rm -f "$work/c2.tar"
built=$(grep -c 'built)' "$work/c2.log" || true)
cached=$(grep -c 'cached)' "$work/c2.log" || true)
read_bytes=$(sed -n 's/.*(\([0-9]*\) bytes of store files read).*/\1/p' "$work/c2.log")
total_bytes=$(sed -n 's/.*(\([0-9]*\) bytes of store files read).*/\1/p' "$work/c1.log")

python3 - "$ours" "$ref" "$tarsum" "$cold" "$warm" "$built" "$cached" "$read_bytes" "$total_bytes" "$FILES" "$MB" "$LAYERS" <<'PY'
import sys
ours, ref, tarsum, cold, warm = map(float, sys.argv[1:6])
built, cached, read_b, total_b, files, mb, layers = map(int, sys.argv[6:13])
import os
print(f"mkimage bench: {layers} layers, {files} files, {total_b/1e6:.0f} MB of store files"
      f" ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end)")
print(f"  vs stream_layered_image.py: {ref:7.3f} s   mkimage {ours:7.3f} s   ratio {ours/ref:.2f} (target <= 0.5)")
print(f"  vs tar | sha256sum:         {tarsum:7.3f} s   mkimage {ours:7.3f} s   ratio {ours/tarsum:.2f} (target <= 1.2)")
print(f"  cache: cold {cold:.3f} s; one layer changed: {warm:.3f} s, {built} layer(s) re-read, {cached} from the cache,"
      f" {read_b/1e6:.1f} of {total_b/1e6:.0f} MB read from the store")
PY
