#!/usr/bin/env python3
"""The figures of one or more `make bench` summaries as a Markdown table, for the docs.

    bench/table.py bench/results/summary.previous.json bench/results/summary.json

One row per figure: for each run, strata's median and min-max, the peer's, and the ratio of the
medians (strata / peer; below 1 strata is faster, with how many times), then whether every
median lies within the other runs' spread. Figures are matched by bench and figure name.
"""
import json
import sys


def side(s):
    if not s:
        return "–"
    rate = f", {s['gib_per_s']:.2f} GiB/s" if "gib_per_s" in s else ""
    t = (lambda x: f"{x:.4f}") if s["median"] < 0.1 else (lambda x: f"{x:.3f}")
    return f"{t(s['median'])} s ({t(s['min'])}–{t(s['max'])}{rate})"


def within(runs, role):
    sides = [r.get(role) for r in runs]
    if any(s is None for s in sides):
        return True
    return all(b["min"] <= a["median"] <= b["max"] for a in sides for b in sides)


def main(paths):
    runs = [json.load(open(p)) for p in paths]
    keyed = [{(f["bench"], f["figure"]): f for f in r["figures"]} for r in runs]
    dates = ", ".join(r.get("date", "?") for r in runs)
    print(f"Runs: {dates} (commit {runs[-1].get('commit', '?')[:10]}).\n")
    head = "| bench | figure | " + " | ".join(
        f"run {i + 1}: strata | peer | ratio" for i in range(len(runs))) + " | steady |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for key in keyed[-1]:
        figs = [k.get(key) for k in keyed]
        if any(f is None for f in figs):
            continue
        cells = []
        for f in figs:
            ratio = "–"
            if f.get("peer") and f["strata"]["median"] > 0:
                r = f["strata"]["median"] / f["peer"]["median"]
                ratio = f"{r:.3g} ({1 / r:.1f}× {'faster' if r < 1 else 'slower'})" if r < 1 \
                    else f"{r:.3g} ({r:.1f}× slower)"
            cells += [side(f["strata"]), side(f.get("peer")), ratio]
        steady = within(figs, "strata") and within(figs, "peer")
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + f" | {'yes' if steady else 'no'} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: bench/table.py SUMMARY.json [SUMMARY.json ...]")
    main(sys.argv[1:])
