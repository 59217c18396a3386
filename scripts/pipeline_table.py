#!/usr/bin/env python3
"""The pipeline family's record table (README, results/pipeline/*-family-*.md) from a results
JSON of `parabench run --suite pipeline_family`: per case the schedule, the layers per stage,
the simulated idle fraction per stage (unit costs), the measured and predicted activation
peak per rank, the weight copies held (the asynchronous kinds: the most weight versions each
stage held, measured, with every rank's parameter memory), the pipeline bytes rank 0 sends per step, the median
step time and the measured idle per stage. Only what the run recorded; nothing is estimated.

usage: scripts/pipeline_table.py RESULTS.json
"""
import json
import sys


def main(path):
    d = json.load(open(path))
    print("| case | schedule | layers per stage | simulated idle per stage | activation peak per rank, MiB "
          "(= predicted) | weight copies | pp bytes sent by rank 0 per step | step ms (median) | "
          "measured idle per stage |")
    print("|---|---|---|---|---|---|---:|---:|---|")
    for c in d["cases"]:
        pl = c.get("pipeline") or {}
        steps = c["steps"]
        acts = sorted((r["rank"], r["measured_bytes"], r["predicted_bytes"]) for r in c["memory"]
                      if r["category"] == "activations")
        exact = all(m == p for _, m, p in acts)
        act = ", ".join("%.2f" % (m / 2**20) for _, m, _ in acts) + ("" if exact else " (differs!)")
        sent = sum(r["bytes"] for r in c["comm"] if r["group"] == "pp" and r["op"] == "send")
        copies = "2 (two pipelines)" if c["schedule"] in ("dualpipe", "chimera") else "1"
        versions = [s.get("weight_versions", 1) for s in pl.get("stages", [])]
        if any(v > 1 for v in versions):  # the asynchronous kinds: stashed versions (Params, measured)
            params = sorted((r["rank"], r["measured_bytes"], r["predicted_bytes"]) for r in c["memory"]
                            if r["category"] == "params")
            copies = "%s versions; params %s MiB%s" % (
                ", ".join(map(str, versions)), ", ".join("%.2f" % (m / 2**20) for _, m, _ in params),
                "" if all(m == p for _, m, p in params) else " (differs!)")
        if "post_validation" in c["features"]:
            copies += " + the optimizer state's copy"
        stages = pl.get("stages", [])
        split = pl.get("stage_layers") if pl.get("stage_weights") else None
        print("| %s | %s | %s | %s | %s | %s | %d | %.1f | %s |" % (
            c["name"], c["schedule"], ", ".join(map(str, split)) if split else "even",
            ", ".join("%.3f" % s["simulated_idle_fraction"] for s in stages), act, copies, sent // steps,
            c["throughput"]["step_ms_median"],
            ", ".join("%.3f" % s["measured_idle_fraction"] for s in stages)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
