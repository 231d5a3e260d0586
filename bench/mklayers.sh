#!/usr/bin/env bash
# Benchmark of mklayers: generates closure graphs shaped like real ones (a libc hub, a core of
# shared libraries, packages in ecosystems of 200 that mostly depend within their ecosystem,
# 10% with one dependency into one of ten library ecosystems, self-references, log-normal NAR
# sizes), then measures wall time and peak RSS of
#   - strata vs nixpkgs' closure-graph.py (popularity) and auto-layer.py on 3000 paths,
#   - strata alone on 100 000 paths (targets: < 1 s, < 200 MB),
#   - strata alone on a "dense" 100 000-path variant whose cross-ecosystem links go anywhere,
#     so that closures grow with the graph (a stress case: exact popularity and closure sizes
#     are sums over reachable sets, which cost more as those sets grow).
# Usage: bench/mklayers.sh            (builds the release binary itself)
# Needs python3 and GNU time (/usr/bin/time; `apt-get install -y time`).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
shared=$root/../shared/reference
target=${CARGO_TARGET_DIR:-$root/target}
runs=${RUNS:-5}

[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time missing (apt-get install -y time)" >&2; exit 1; }
[ -d "$shared" ] || { echo "bench: $shared missing" >&2; exit 1; }

cargo build --release --quiet --bin mklayers --manifest-path "$root/Cargo.toml"
mklayers=$target/release/mklayers

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

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

# measure RUNS COMMAND... → "wall_s cpu_s peak_mb": the fastest wall time of RUNS runs, the CPU
# time (user + sys) of that run, the largest peak RSS of all runs. CPU time is the steadier
# figure when the machine is busy with other work.
measure() {
    local n=$1 best="" cpu="" peak=0 start end kb user sys
    shift
    for _ in $(seq "$n"); do
        start=$(date +%s%N)
        /usr/bin/time -f "%U %S %M" -o "$work/rss" "$@" > "$work/out"
        end=$(date +%s%N)
        read -r user sys kb < <(tail -n 1 "$work/rss")
        [ "$kb" -gt "$peak" ] && peak=$kb
        if [ -z "$best" ] || [ $((end - start)) -lt "$best" ]; then
            best=$((end - start))
            cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')
        fi
    done
    awk -v ns="$best" -v cpu="$cpu" -v kb="$peak" \
        'BEGIN { printf "%.4f %.2f %.1f\n", ns / 1e9, cpu, kb / 1024 }'
}

g3=$work/graph-3000.json
g100=$work/graph-100000.json
read -r sp_t sp_c sp_m < <(measure "$runs" "$mklayers" --max-layers 100 "$g3")
"$mklayers" --explain --max-layers 100000 "$g3" \
    | python3 -c 'import json,sys; print("\n".join(p["path"] for p in json.load(sys.stdin)["paths"]))' \
    > "$work/strata-order"
read -r cg_t cg_c cg_m < <(measure 1 python3 "$shared/closure-graph.py" "$work/attrs-3000.json" graph)
cp "$work/out" "$work/python-order"
read -r sa_t sa_c sa_m < <(measure "$runs" "$mklayers" --algorithm auto --max-layers 100 "$g3")
cp "$work/out" "$work/strata-auto"
read -r al_t al_c al_m < <(PYTHONHASHSEED=0 measure 1 python3 "$shared/auto-layer.py" "$g3" "$work/ignore" 99)
cp "$work/out" "$work/python-auto"
read -r bp_t bp_c bp_m < <(measure "$runs" "$mklayers" --max-layers 100 "$g100")
read -r ba_t ba_c ba_m < <(measure "$runs" "$mklayers" --algorithm auto --max-layers 100 "$g100")
read -r dp_t dp_c dp_m < <(measure 1 "$mklayers" --max-layers 100 "$work/graph-100000-dense.json")

same_order=$(cmp -s "$work/strata-order" "$work/python-order" && echo yes || echo NO)
same_auto=$(python3 -c '
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
print("yes" if sorted(map(sorted, a)) == sorted(map(sorted, b)) else "NO")' "$work/strata-auto" "$work/python-auto")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0fx", a / b; else print "-" }'; }
row() { printf '%-34s %9s %8s %8s %9s %9s %7s\n' "$@"; }
row "case (max-layers 100)" "wall s" "cpu s" "peak MB" "wall x" "cpu x" "agrees"
row "3000 paths, closure-graph.py" "$cg_t" "$cg_c" "$cg_m" "" "" ""
row "3000 paths, mklayers popularity" "$sp_t" "$sp_c" "$sp_m" "$(ratio "$cg_t" "$sp_t")" "$(ratio "$cg_c" "$sp_c")" "$same_order"
row "3000 paths, auto-layer.py" "$al_t" "$al_c" "$al_m" "" "" ""
row "3000 paths, mklayers auto" "$sa_t" "$sa_c" "$sa_m" "$(ratio "$al_t" "$sa_t")" "$(ratio "$al_c" "$sa_c")" "$same_auto"
row "100000 paths, mklayers popularity" "$bp_t" "$bp_c" "$bp_m" "" "" ""
row "100000 paths, mklayers auto" "$ba_t" "$ba_c" "$ba_m" "" "" ""
row "100000 dense, mklayers popularity" "$dp_t" "$dp_c" "$dp_m" "" "" ""
echo "(mklayers: fastest of $runs runs, dense: 1 run; python: 1 run; closure-graph.py only orders,"
echo " mklayers also cuts layers; load average now: $(cut -d' ' -f1-3 /proc/loadavg), on $(nproc) cores)"
