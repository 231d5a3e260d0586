#!/usr/bin/env bash
# Run every benchmark; each prints its figures (strata, the peer and the physical anchors, run
# the same number of times, interleaved) and appends them to bench/results/NAME.jsonl. At the
# end, bench/results/summary.json gathers them: per figure both sides' medians, min, max and
# runs, the ratio strata / peer of the medians, the anchors, and throughputs where bytes are known.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
cargo build --release --quiet
rm -f "$BENCH_RESULTS"/*.jsonl "$BENCH_RESULTS/summary.json"
for b in bench/store-add.sh bench/mkimage.sh bench/mklayers.sh bench/push.sh bench/example.sh; do
  echo "== $b"
  "$b"
done
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
           "cpus": os.cpu_count(), "ratio": "strata median / peer median", "figures": figures}
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
PY
