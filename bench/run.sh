#!/usr/bin/env bash
# Run every benchmark; each prints its figures (strata, the peer and the physical anchors, run
# the same number of times, interleaved) and appends them to bench/results/NAME.jsonl. At the
# end, bench/results/summary.json gathers them: per figure both sides' medians, min, max and
# runs, the ratio strata / peer of the medians, the anchors, and throughputs where bytes are known.
set -euo pipefail
cd "$(dirname "$0")/.."
# Passes (bench/lib.sh): each benchmark's runs split into BENCH_PASSES passes, the benchmarks
# taking turns pass by pass, so that every figure samples the whole run.
export BENCH_PASSES=${BENCH_PASSES:-3}
. bench/lib.sh
cargo build --release --quiet
# The last run's summary is kept beside the new one, and each figure compared with it.
if [ -f "$BENCH_RESULTS/summary.json" ]; then
  mv "$BENCH_RESULTS/summary.json" "$BENCH_RESULTS/summary.previous.json"
fi
rm -f "$BENCH_RESULTS"/*.jsonl
# Every bench's work dir stays until all are measured: removing one bench's files just before
# the next bench's timed runs would slow the files those create (bench/lib.sh). Removed at the
# end (disk: some 25 GB at the peak); a `make bench` started within six minutes of this one's end
# waits the rest of that window out before its first timed run (`settle`).
# Each run holds a lock on its work dir for its whole life; a dir whose lock is free was left by
# a run that was killed (SIGKILL runs no trap), and is reclaimed before this one starts (its
# removal then counts for `settle`). Only dirs this user made with mktemp (a real directory of
# ours, mode 700): anyone can create names in /var/tmp, and removing one deletes the store paths
# and docker images it lists.
for stale in /var/tmp/strata-bench.??????; do
  [ -d "$stale" ] && [ ! -L "$stale" ] && [ -O "$stale" ] || continue
  [ "$(stat -c %a "$stale")" = 700 ] || continue
  if flock -n "$stale" true; then
    echo "== removing $stale (left by a run that was killed)" >&2
    bench_remove "$stale"
  fi
done
BENCH_WORK=$(mktemp -d /var/tmp/strata-bench.XXXXXX)
export BENCH_WORK
exec {work_lock}< "$BENCH_WORK"
flock -n "$work_lock"
# BENCHES="mklayers push" runs some of them (the summary then holds their figures alone).
read -r -a benches <<< "${BENCHES:-store-add mkimage mklayers push example direct}"
control=$BENCH_WORK/turns
mkdir "$control"
declare -A go ready pid
for b in "${benches[@]}"; do
  mkfifo "$control/$b.go" "$control/$b.ready"
  # Read-write, so that neither side's open waits for the other.
  exec {fd}<>"$control/$b.go"
  go[$b]=$fd
  exec {fd}<>"$control/$b.ready"
  ready[$b]=$fd
done
stop_all() { # each benchmark still running (the wrapper's child) and its wrapper
  for b in "${!pid[@]}"; do
    pkill -TERM -P "${pid[$b]}" 2>/dev/null || true
    kill "${pid[$b]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap 'stop_all; echo "== removing $BENCH_WORK" >&2; bench_remove "$BENCH_WORK"' EXIT
# next_message BENCH: what BENCH says next: "ready" (for a pass) or "exit STATUS".
next_message() {
  local message
  read -r message <&"${ready[$1]}"
  case $message in
    ready | "exit 0") echo "$message" ;;
    *) echo "== bench/$1.sh failed ($message)" >&2; exit 1 ;;
  esac
}
# Each benchmark starts alone and prepares its inputs (untimed) up to its first pass.
active=()
for b in "${benches[@]}"; do
  echo "== bench/$b.sh"
  (
    # The benchmark holds only its own ends of its own FIFOs: when run.sh goes, its reads end.
    for other in "${benches[@]}"; do eval "exec ${go[$other]}>&- ${ready[$other]}>&-"; done
    status=0
    BENCH_TURN_GO=$control/$b.go BENCH_TURN_READY=$control/$b.ready "bench/$b.sh" || status=$?
    echo "exit $status" > "$control/$b.ready"
  ) &
  pid[$b]=$!
  message=$(next_message "$b")
  if [ "$message" = ready ]; then active+=("$b"); fi
done
# Then pass after pass, each benchmark in turn, until every one has recorded its figures.
pass=0
while [ ${#active[@]} -gt 0 ]; do
  pass=$((pass + 1))
  still=()
  for b in "${active[@]}"; do
    echo "== pass $pass: bench/$b.sh" >&2
    echo go >&"${go[$b]}"
    message=$(next_message "$b")
    if [ "$message" = ready ]; then still+=("$b"); fi
  done
  active=("${still[@]}")
done
wait
pid=()   # all ended: their numbers may be another process's now
python3 - "$BENCH_RESULTS" <<'PY'
import glob, json, os, subprocess, sys, time
results = sys.argv[1]
figures = []
for f in sorted(glob.glob(os.path.join(results, "*.jsonl"))):
    for line in open(f):
        fig = json.loads(line)
        def rate(side):
            if "bytes" in side and side["median"] > 0:
                side["gib_per_s"] = round(side["bytes"] / side["median"] / 2**30, 3)
        for side in [fig["strata"], fig.get("peer")] + fig["anchors"]:
            if side:
                rate(side)
        if fig.get("peer") and fig["peer"]["median"] > 0:
            fig["ratio"] = round(fig["strata"]["median"] / fig["peer"]["median"], 3)
        figures.append(fig)
try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = ""
summary = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit,
           "cpus": os.cpu_count(), "passes": int(os.environ.get("BENCH_PASSES", "1")),
           "ratio": "strata median / peer median", "figures": figures}
with open(os.path.join(results, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1, sort_keys=True)
    f.write("\n")
print(f"== summary: {os.path.join(results, 'summary.json')}")
for fig in figures:
    s, peer, anchors = fig["strata"], fig.get("peer"), fig["anchors"]
    line = f"  {fig['bench']:9} {fig['figure'][:52]:52} strata {s['median']:8.3f} s"
    line += f"  peer {peer['median']:8.3f} s  ratio {fig['ratio']:5.2f}" if peer else f"{'':31}"
    if anchors and anchors[0]["median"] > 0:
        a = anchors[0]
        line += f"  anchor {a['name']} {a['median']:.3f} s (strata / anchor {s['median'] / a['median']:.2f})"
    if "gib_per_s" in s:
        line += f"  {s['gib_per_s']:.2f} GiB/s"
    print(line)
# Against the previous run: is each side's median within the other run's spread (min-max)?
previous = os.path.join(results, "summary.previous.json")
if os.path.exists(previous):
    before = {(f["bench"], f["figure"]): f for f in json.load(open(previous))["figures"]}
    print(f"== against the previous run ({json.load(open(previous)).get('date', '?')}): "
          "each median within the other run's min-max?")
    steady = True
    for fig in figures:
        old = before.get((fig["bench"], fig["figure"]))
        if not old:
            continue
        for role in ("strata", "peer"):
            a, b = fig.get(role), old.get(role)
            if not a or not b:
                continue
            ok = b["min"] <= a["median"] <= b["max"] and a["min"] <= b["median"] <= a["max"]
            steady &= ok
            print(f"  {'yes' if ok else 'NO ':3} {fig['bench']:9} {fig['figure'][:52]:52} {role:6} "
                  f"now {a['median']:.3f} ({a['min']:.3f}-{a['max']:.3f})  "
                  f"before {b['median']:.3f} ({b['min']:.3f}-{b['max']:.3f})")
    print("  every figure within the other run's spread" if steady
          else "  some figures moved beyond the other run's spread")
PY
