#!/usr/bin/python3
"""The qualification summary (scripts/qualify.sh): per case over the repeats, the statuses
and the median step time's median, min, max and coefficient of variation (population
standard deviation / mean); the environment of the first repeat; summary.json and
summary.md in the output folder; the verdict as the last line (exit 0 PASS, 1 FAIL). A case
fails when any repeat's status is neither pass nor skip, or a repeat is missing.

    qualify_summary.py OUT_DIR REPEATS RUN.json...
"""
import json
import statistics
import sys


def main():
    out, repeats, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    runs = [json.load(open(p)) for p in paths]
    names = []
    for r in runs:
        for c in r["cases"]:
            if c["name"] not in names:
                names.append(c["name"])
    cases, failed, skipped, cvs = [], [], [], []
    for n in names:
        st, med = [], []
        for r in runs:
            c = next((c for c in r["cases"] if c["name"] == n), None)
            st.append(c["status"] if c else "missing")
            m = ((c or {}).get("throughput") or {}).get("step_ms_median")
            if m is not None and c["status"] == "pass":
                med.append(m)
        st += ["missing"] * (repeats - len(runs))
        row = {"name": n, "statuses": st}
        if med:
            mean = statistics.fmean(med)
            cv = statistics.pstdev(med) / mean if mean > 0 else 0.0
            row.update(step_ms_median=statistics.median(med), step_ms_min=min(med), step_ms_max=max(med), cv=cv,
                       repeats_timed=len(med))
            cvs.append((cv, n))
        if all(s == "skip" for s in st):
            skipped.append(n)
        elif any(s not in ("pass", "skip") for s in st):
            failed.append(n)
        cases.append(row)
    ran = len(names) - len(skipped)
    verdict = ("qualification: %s (%d cases run x %d repeats, %d skipped as larger than the world%s%s)" % (
        "FAIL" if failed else "PASS", ran, repeats, len(skipped),
        ", failed: " + ", ".join(failed) if failed else "",
        ", worst step-time CV %.1f%% (%s)" % (100 * max(cvs)[0], max(cvs)[1]) if cvs else ""))
    env = runs[0].get("env", {})
    summary = {"schema": "parabench-qualification-1", "suite": runs[0].get("suite"), "repeats": repeats,
               "environment": env, "cases": cases, "verdict": verdict, "runs": paths}
    with open(out + "/summary.json.tmp", "w") as f:
        json.dump(summary, f, indent=1)
    import os
    os.replace(out + "/summary.json.tmp", out + "/summary.json")
    lines = ["# Qualification: %s" % summary["suite"], "", "| field | value |", "|---|---|"]
    lines += ["| %s | %s |" % (k, str(v).replace("|", "\\|")) for k, v in env.items()]
    lines += ["", "| case | statuses | step ms median | min | max | CV |", "|---|---|---:|---:|---:|---:|"]
    for c in cases:
        if "cv" in c:
            lines.append("| %s | %s | %.3f | %.3f | %.3f | %.1f%% |" % (c["name"], " ".join(c["statuses"]),
                         c["step_ms_median"], c["step_ms_min"], c["step_ms_max"], 100 * c["cv"]))
        else:
            lines.append("| %s | %s | — | — | — | — |" % (c["name"], " ".join(c["statuses"])))
    lines += ["", verdict, ""]
    with open(out + "/summary.md.tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(out + "/summary.md.tmp", out + "/summary.md")
    print(verdict)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
