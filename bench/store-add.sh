#!/usr/bin/env bash
# store-add against nix-store --add and nix-hash on a >= 500 MB tree of >= 10k files, measured
# in the same run. Prints wall times and the ratios the targets speak of:
#   store-add / nix-store --add          target <= 0.5
#   hash-only throughput vs nix-hash     target >= 1.0x and >= 1.6 GiB/s
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-target}/release
FILES=${BENCH_FILES:-10000}
MB=${BENCH_MB:-520}
work=$(mktemp -d /var/tmp/strata-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
export NIX_CONFIG="substituters ="

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }

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
# Every run adds a fresh path: a salt makes the tree new to both stores.
salt() { date +%s%N > "$work/tree/salt"; }
tar -cf - -C "$work" tree | cat > /dev/null   # warm the page cache for both

# Each measurement is the median of $REPS runs (the machine may be busy with other work).
REPS=${BENCH_REPS:-3}
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(map(float, sys.argv[1:])):.3f}")' "$@"; }
nix_adds=() ours_adds=() nix_hashes=() ours_hashes=()
for rep in $(seq "$REPS"); do
  # Start each add with no dirty pages left from the last one (writeback throttling would
  # otherwise charge one tool for the other's writes).
  salt; sync
  t0=$(now); nixpath=$(nix-store --add "$work/tree"); t1=$(now)
  nix_adds+=("$(elapsed "$t0" "$t1")")
  nix-store --delete "$nixpath" >/dev/null 2>&1 || true

  salt; sync
  root="$work/root-$rep"
  t0=$(now); "$BIN/store-add" --store-root "$root" "$work/tree" > "$work/info.json"; t1=$(now)
  ours_adds+=("$(elapsed "$t0" "$t1")")
  chmod -R u+w "$root"; rm -rf "$root"; sync

  t0=$(now); nix-hash --type sha256 "$work/tree" > /dev/null; t1=$(now)
  nix_hashes+=("$(elapsed "$t0" "$t1")")
  t0=$(now); "$BIN/store-add" --store-root "$work/none" --dry-run "$work/tree" > /dev/null; t1=$(now)
  ours_hashes+=("$(elapsed "$t0" "$t1")")
done
nar_size=$(python3 -c "import json;print(json.load(open('$work/info.json'))['narSize'])")
nix_add=$(median "${nix_adds[@]}") ours_add=$(median "${ours_adds[@]}")
nix_hash=$(median "${nix_hashes[@]}") ours_hash=$(median "${ours_hashes[@]}")

python3 - "$nix_add" "$ours_add" "$nix_hash" "$ours_hash" "$nar_size" "$FILES" <<'PY'
import sys
nix_add, ours_add, nix_hash, ours_hash, size, files = map(float, sys.argv[1:])
gib = size / 2**30
print(f"store-add bench: {int(files)} files, NAR {size/1e6:.0f} MB (medians of the runs)")
print(f"  add:       nix-store --add {nix_add:7.3f} s   store-add {ours_add:7.3f} s   ratio {ours_add/nix_add:.2f} (target <= 0.5)")
print(f"  hash only: nix-hash        {nix_hash:7.3f} s   store-add --dry-run {ours_hash:7.3f} s   "
      f"speed-up {nix_hash/ours_hash:.2f}x (target >= 1.0), {gib/ours_hash:.2f} GiB/s (target >= 1.6)")
PY
