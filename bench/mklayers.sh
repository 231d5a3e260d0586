#!/usr/bin/env bash
# Benchmark of mklayers: generates closure graphs shaped like real ones (a libc hub, a core of
# shared libraries, packages in ecosystems of 200 that mostly depend within their ecosystem,
# 10% with one dependency into one of ten library ecosystems, self-references, log-normal NAR
# sizes), then measures wall time (median and min–max of RUNS runs, default $BENCH_QUICK_RUNS,
# 21: every side takes under a second) and peak RSS of
#   - strata vs nixpkgs' closure-graph.py (popularity) and auto-layer.py on 3000 paths,
#   - strata alone on 100 000 paths (targets: < 1 s, < 200 MB),
#   - strata alone on a "dense" 100 000-path variant whose cross-ecosystem links go anywhere,
#     so that closures grow with the graph (a stress case: exact popularity and closure sizes
#     are sums over reachable sets, which cost more as those sets grow).
# Usage: [RUNS=21] [MKLAYERS=binary] bench/mklayers.sh   (builds the release binary itself)
# Needs python3 and GNU time (/usr/bin/time; `apt-get install -y time`).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib.sh"
shared=$root/../shared/reference
target=${CARGO_TARGET_DIR:-$root/target}
runs=${RUNS:-$BENCH_QUICK_RUNS}

[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time missing (apt-get install -y time)" >&2; exit 1; }
[ -d "$shared" ] || { echo "bench: $shared missing" >&2; exit 1; }

# MKLAYERS=/path/to/mklayers measures that binary instead (e.g. one built from another commit).
if [ -n "${MKLAYERS:-}" ]; then
    mklayers=$MKLAYERS
else
    cargo build --release --quiet --bin mklayers --manifest-path "$root/Cargo.toml"
    mklayers=$target/release/mklayers
fi

bench_init mklayers
trap bench_done EXIT

python3 - "$work" <<'EOF'
import json, random, sys

ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"
NAR_HASH = "sha256:15rnbqpncbwhcd4mqzqhvz9srh6xanjkm7piiwww36si73qbjzky"
CORE = ["glibc-2.39-52", "gcc-13.3.0-lib", "bash-5.2p37", "coreutils-9.5", "zlib-1.3.1",
        "openssl-3.0.15", "ncurses-6.4", "readline-8.2p13", "libffi-3.4.6", "xz-5.6.3",
        "bzip2-1.0.8", "sqlite-3.46.1", "expat-2.6.4", "libxml2-2.13.4", "icu4c-74.2"]
WORDS = ["python3.12", "perl5.40", "ghc", "rust", "node", "lib", "qt", "gtk", "x11", "font",
         "tool", "util", "plugin", "data", "doc", "gst", "mesa", "llvm", "boost", "java"]

def generate(n, seed, dense=False):
    rng = random.Random(seed)
    core = min(60, max(5, n // 50))
    cluster = 200
    names, refs = [], []
    for i in range(n):
        r = set()
        if i < core:
            name = CORE[i] if i < len(CORE) else f"corelib{i}-1.{i}"
            if i > 0:
                r.add(0)
                for _ in range(rng.randrange(3)):
                    r.add(rng.randrange(i))
        else:
            start = core + (i - core) // cluster * cluster
            name = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{rng.randrange(10)}.{rng.randrange(40)}"
            if rng.random() < 0.9:
                r.add(0)
            for _ in range(rng.randrange(3)):
                r.add(int(rng.random() ** 2 * core))
            if i > start:
                for _ in range(rng.randrange(5)):
                    r.add(rng.randrange(start, i))
            # Now and then a dependency on another ecosystem: on one of the library ecosystems
            # (the first ten, say C libraries and language runtimes), or, in the dense
            # variant, on any earlier one.
            if i > core and rng.random() < 0.1:
                reach = i if dense else min(i, core + 10 * cluster)
                r.add(rng.randrange(core, reach))
        if rng.random() < 0.4:
            r.add(i)
        names.append(name)
        refs.append(r)
    paths = ["/nix/store/" + "".join(rng.choice(ALPHABET) for _ in range(32)) + "-" + name
             for name in names]
    sizes = [max(200, int(rng.lognormvariate(11, 2))) for _ in range(n)]
    graph = [{"narHash": NAR_HASH, "narSize": sizes[i], "path": paths[i],
              "references": sorted(paths[j] for j in refs[i])} for i in range(n)]
    graph.sort(key=lambda x: x["path"])
    return graph

work = sys.argv[1]
for n, dense in ((3000, False), (100000, False), (100000, True)):
    graph = generate(n, n, dense)
    name = f"{n}-dense" if dense else str(n)
    with open(f"{work}/graph-{name}.json", "w") as f:
        json.dump(graph, f)
    if n == 3000:
        with open(f"{work}/attrs-{n}.json", "w") as f:
            json.dump({"graph": graph}, f)
EOF
: > "$work/ignore"

# `peak NAME COMMAND...` runs a command once more under GNU time for its peak RSS.
peak() {
    local name=$1
    shift
    /usr/bin/time -f "%M" -o "$work/rss" "$@" > /dev/null
    awk '{ printf "%.1f\n", $1 / 1024 }' "$work/rss" > "$work/$name.peak"
}

g3=$work/graph-3000.json
g100=$work/graph-100000.json
gd=$work/graph-100000-dense.json
# The 3000-path comparisons, interleaved: strata and the reference script take turns, so that
# both see the same machine load and cache state, the same number of times. Each side's output
# is kept (the last run's) to check that they agree.
side sp '"$mklayers" --max-layers 100 "$g3" > "$work/out-sp"'
side cg 'python3 "$shared/closure-graph.py" "$work/attrs-3000.json" graph > "$work/python-order"'
side sa '"$mklayers" --algorithm auto --max-layers 100 "$g3" > "$work/strata-auto"'
side al 'PYTHONHASHSEED=0 python3 "$shared/auto-layer.py" "$g3" "$work/ignore" 99 > "$work/python-auto"'
side "cat graph" 'cat "$g3" > /dev/null'
side bp '"$mklayers" --max-layers 100 "$g100" > /dev/null'
side ba '"$mklayers" --algorithm auto --max-layers 100 "$g100" > /dev/null'
side dp '"$mklayers" --max-layers 100 "$gd" > /dev/null'
warm() { cat "$g3" "$g100" "$gd" "$work/attrs-3000.json" "$mklayers" > /dev/null; }
# The 100 000-path runs (strata alone) allocate a few hundred MB each: each starts from emptied
# caches (fresh_memory, bench/lib.sh says why), its inputs read back. The 3000-path runs, whose
# Python side would start from a cold interpreter after every drop, keep the pass's one.
warm_large() { fresh_memory; warm; }
settle
for pass in $(seq "$BENCH_PASSES"); do
    turn
    interleave_pass "$pass" "$runs" warm sp cg sa al "cat graph"
    interleave_pass "$pass" "$runs" warm_large bp ba dp
done
peak sp "$mklayers" --max-layers 100 "$g3"
peak cg python3 "$shared/closure-graph.py" "$work/attrs-3000.json" graph
peak sa "$mklayers" --algorithm auto --max-layers 100 "$g3"
PYTHONHASHSEED=0 peak al python3 "$shared/auto-layer.py" "$g3" "$work/ignore" 99
peak bp "$mklayers" --max-layers 100 "$g100"
peak ba "$mklayers" --algorithm auto --max-layers 100 "$g100"
peak dp "$mklayers" --max-layers 100 "$gd"
"$mklayers" --explain --max-layers 100000 "$g3" \
    | python3 -c 'import json,sys; print("\n".join(p["path"] for p in json.load(sys.stdin)["paths"]))' \
    > "$work/strata-order"

same_order=$(cmp -s "$work/strata-order" "$work/python-order" && echo yes || echo NO)
same_auto=$(python3 -c '
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
print("yes" if sorted(map(sorted, a)) == sorted(map(sorted, b)) else "NO")' "$work/strata-auto" "$work/python-auto")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0fx", a / b; else print "-" }'; }
row() { printf '%-34s %9s %9s %9s %8s %8s %7s\n' "$@"; }
line() {
    local name=$1 label=$2 versus=${3:-} agrees=${4:-} median min max n
    read -r median min max n < <(stats "$name")
    local times=""
    if [ -n "$versus" ]; then
        times=$(ratio "$(stats "$versus" | cut -d' ' -f1)" "$median")
    fi
    row "$label" "$median" "$min" "$max" "$(cat "$work/$name.peak")" "$times" "$agrees"
}
row "case (max-layers 100)" "median s" "min s" "max s" "peak MB" "x median" "agrees"
line cg "3000 paths, closure-graph.py"
line sp "3000 paths, mklayers popularity" cg "$same_order"
line al "3000 paths, auto-layer.py"
line sa "3000 paths, mklayers auto" al "$same_auto"
line bp "100000 paths, mklayers popularity"
line ba "100000 paths, mklayers auto"
line dp "100000 dense, mklayers popularity"
echo "(wall time of the whole process, $runs runs of each, strata and the python scripts"
echo " interleaved; x median: the script's median over mklayers' median; closure-graph.py only"
echo " orders, mklayers also cuts layers; load average now: $(cut -d' ' -f1-3 /proc/loadavg),"
echo " on $(nproc) cores)"
record "3000 paths, popularity order (closure-graph.py)" sp cg "cat graph" > /dev/null
record "3000 paths, auto layers (auto-layer.py)" sa al "cat graph" > /dev/null
record "100000 paths, popularity" bp - > /dev/null
record "100000 paths, auto" ba - > /dev/null
record "100000 dense paths, popularity" dp - > /dev/null
