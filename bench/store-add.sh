#!/usr/bin/env bash
# store-add against nix-store --add and nix-hash on a >= 500 MB tree of >= 10k files, each side
# run the same number of times, interleaved, after `sync` and the same page-cache warm-up.
#   add:       store-add vs nix-store --add, anchor `cp -a` of the same tree, $BENCH_RUNS runs
#              (default 9), each from emptied caches with the tree and the programs read back
#              (bench/lib.sh's fresh_memory says why); timed to the end of the command and again to the end of a `sync`
#              after it (the writeback each one leaves behind is part of its cost: store-add
#              syncs before it renames, nix does not). Every run writes 10 000 new files into a
#              target of its own (a fresh store root, copy dir, salted nix path); all of them are
#              removed only at the end (bench/lib.sh says why)
#   hash only: store-add --dry-run vs nix-hash, $BENCH_QUICK_RUNS runs (default 21); anchors `openssl dgst -sha256` of the tree's NAR
#              (the same bytes, one file in the page cache: the SHA-256 limit) and `cat` of it
#              (reading), and `openssl speed -evp sha256` (the hash alone, no I/O)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)
FILES=${BENCH_FILES:-10000}
MB=${BENCH_MB:-520}
bench_init store-add
trap bench_done EXIT
export NIX_CONFIG="substituters ="

echo "bench/store-add: generating $FILES files, ${MB} MB in $work/tree" >&2
python3 - "$work/tree" "$FILES" "$MB" <<'PY'
import os, random, sys
root, files, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
per = mb * 1024 * 1024 // files
block = os.urandom(1 << 20)
for i in range(files):
    d = os.path.join(root, "d%03d" % (i % 97), "s%02d" % (i % 13))
    os.makedirs(d, exist_ok=True)
    size = max(1, int(per * rng.uniform(0.2, 1.8)))
    off = rng.randrange(0, len(block) - min(size, len(block)) + 1)
    data = (block[off:] + block) * (size // len(block) + 1)
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(data[:size])
    if i % 11 == 0:
        os.chmod(os.path.join(d, "f%05d" % i), 0o755)
PY
nix-store --dump "$work/tree" > "$work/tree.nar"
nar_size=$(stat -c %s "$work/tree.nar")
# The same warm-up before every timed run: the tree and its NAR read into the page cache.
warm() { sync; tar -cf - -C "$work" tree | cat > /dev/null; cat "$work/tree.nar" > /dev/null; }

# Adds: every run adds a fresh path (a new salt) into a target of its own: nix a new store
# path, store-add a new store root, cp a new dir. Nothing is removed between runs: freed inodes
# would slow every file the next run creates (bench/lib.sh); all of it goes at the end. Each
# add writes some 520 MB of new page cache, so each starts from emptied caches (fresh_memory,
# bench/lib.sh says why), then the tree and every side's program read back (nix-store, its
# libraries and database; store-add; cp).
n=0
salt() { n=$((n + 1)); echo "$n" > "$work/tree/salt"; }
warm_tools() {
    nix-store --version > /dev/null
    cat /nix/var/nix/db/db.sqlite "$BIN/store-add" "$(command -v cp)" > /dev/null
    cp --version > /dev/null
}
prepare_add() { salt; fresh_memory; warm_tools; warm; }
side "nix-store --add" 'nix-store --add "$work/tree" >> "$work/nix-paths"'
side "store-add" '"$BIN/store-add" --store-root "$work/root-$n" "$work/tree" > /dev/null'
side "cp -a" 'cp -a "$work/tree" "$work/copy-$n"'
for s in "nix-store --add" "store-add" "cp -a"; do side_then "$s" sync; done
side "nix-hash" 'nix-hash --type sha256 "$work/tree" > /dev/null'
side "store-add --dry-run" '"$BIN/store-add" --store-root "$work/none" --dry-run "$work/tree" > /dev/null'
side "openssl dgst (NAR file)" 'openssl dgst -sha256 "$work/tree.nar" > /dev/null'
side "cat (NAR file)" 'cat "$work/tree.nar" > /dev/null'
for s in "nix-hash" "store-add --dry-run" "openssl dgst (NAR file)" "cat (NAR file)"; do
    side_bytes "$s" "$nar_size"
done
# Hash only reads the tree of the NAR file: without the salt file the adds write (the salt is
# removed after each pass's adds and written anew before the next add; one file, no settling
# needed).
settle
for pass in $(seq "$BENCH_PASSES"); do
    turn
    interleave_pass "$pass" "$BENCH_RUNS" prepare_add "nix-store --add" "store-add" "cp -a"
    rm -f "$work/tree/salt"
    interleave_pass "$pass" "$BENCH_QUICK_RUNS" warm "nix-hash" "store-add --dry-run" "openssl dgst (NAR file)" "cat (NAR file)"
done

# The hash alone: openssl's own figure, as seconds per NAR's worth of bytes.
speed=$(openssl speed -evp sha256 -bytes 1048576 -seconds 2 2>/dev/null |
    awk '/^sha256|^SHA256/ { v = $NF; sub(/k$/, "", v); print v * 1000 }')
side "openssl speed -evp sha256" ':'
side_bytes "openssl speed -evp sha256" "$nar_size"
awk -v b="$nar_size" -v r="$speed" 'BEGIN { printf "%.6f\n", b / r }' > "$work/samples/openssl speed -evp sha256"

echo "store-add bench: $FILES files, NAR $((nar_size / 1000000)) MB"
record "add, to the end of the command" "store-add" "nix-store --add" "cp -a"
record "add, to the end of a sync after it" "store-add+then" "nix-store --add+then" "cp -a+then"
record "hash only" "store-add --dry-run" "nix-hash" \
    "openssl dgst (NAR file)" "cat (NAR file)" "openssl speed -evp sha256"
machine
