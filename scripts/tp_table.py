#!/usr/bin/env python3
"""The TP arrangements of results files side by side (issue 17's record): per case its ranks,
the arrangement of the tp ranks, the median step time, rank 0's parameter and activation
memory (measured, with the prediction where it differs) and rank 0's bytes by collective.

    scripts/tp_table.py results/tp_nd/cpu-4ranks-*.json results/tp_nd/cpu-8ranks-*.json
"""
import json
import sys

OPS = ["all_reduce", "all_gather", "reduce_scatter", "broadcast"]


def mib(b):
    return f"{b / 2**20:.2f}"


def layout(c):
    l = c["layout"]
    parts = [f"{k}{l[k]}" for k in ["dp", "tp", "pp", "vpp", "cp", "ep"] if l.get(k, 1) > 1]
    g = c.get("tp_grid", {"kind": "1d", "depth": 1})
    kind = g["kind"] + (f", d{g['depth']}" if g["depth"] > 1 else "")
    if "sp" in c.get("features", []):
        kind += " + sp"
    return " ".join(parts) or "1 rank", kind


def memory(c, category):
    for m in c["memory"]:
        if m["rank"] == 0 and m["category"] == category:
            got, want = m["measured_bytes"], m["predicted_bytes"]
            return mib(got) + ("" if got == want else f" (pred. {mib(want)})")
    return "—"


def main(paths):
    print("| case | layout | tp arrangement | step ms | params MiB | activations MiB | "
          + " | ".join(f"{op} MiB" for op in OPS) + " | all MiB | calls |")
    print("|---|---|---|---:|---:|---:|" + "---:|" * (len(OPS) + 2))
    for path in paths:
        for c in json.load(open(path))["cases"]:
            if c["status"] != "pass":
                continue
            by_op = {op: 0 for op in OPS}
            calls = 0
            for row in c["comm"]:
                by_op[row["op"]] = by_op.get(row["op"], 0) + row["bytes"]
                calls += row["calls"]
            lay, kind = layout(c)
            step = c["throughput"].get("step_ms_median")
            print(f"| {c['name']} | {lay} | {kind} | {step:.1f} | {memory(c, 'params')} | {memory(c, 'activations')} | "
                  + " | ".join(mib(by_op[op]) for op in OPS) + f" | {mib(sum(by_op.values()))} | {calls} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
