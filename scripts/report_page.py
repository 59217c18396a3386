#!/usr/bin/python3
"""One self-contained report page (HTML, plots inline as SVG, no network) and its Markdown
twin, for one or more parabench results files side by side (two machines, two commits, CPU
against GPU): `parabench report RESULTS... --html OUT.html [--md OUT.md]` runs this script.

Every table puts the files in columns (file 1, file 2, ...) with the ratio to file 1 where a
number compares. Sections: environment; equivalence (worst rel_err against its tolerance);
throughput (step time median and min-max, tokens/s, TFLOP/s, MFU); memory (every rank and
category, measured against predicted, and a stacked plot of the highest rank by category); communication
(payload and bus bytes per group, op and phase, measured against predicted); pipelines
(measured against simulated idle per stage, the measured timeline of the last step, the
schedule simulated at unit costs as `parabench schedule` draws it); balance (context
parallelism's attention pairs per rank, MoE's tokens per rank); overlap (communication, exposed, hidden
fraction); and, from `parabench collectives` files, bus bandwidth against message size.
The plots come from matplotlib (Debian's python3-matplotlib). The Markdown carries the same
tables with the same numbers.

    report_page.py --html OUT.html [--md OUT.md] RESULTS.json...
"""
import argparse
import html
import io
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: searchable, selectable
import matplotlib.pyplot as plt  # noqa: E402


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def ratio(a, b):
    """b / a as 'x1.23', '—' where it does not compare."""
    if a is None or b is None or not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or a == 0:
        return "—"
    return "×%.2f" % (b / a)


class Table:
    """A table rendered the same way in HTML and Markdown."""

    def __init__(self, title, header):
        self.title, self.header, self.rows = title, header, []

    def add(self, row):
        self.rows.append([str(c) for c in row])

    def markdown(self):
        esc = lambda c: c.replace("|", "\\|")
        out = ["### " + self.title, "", "| " + " | ".join(map(esc, self.header)) + " |",
               "|" + "|".join("---" for _ in self.header) + "|"]
        out += ["| " + " | ".join(map(esc, r)) + " |" for r in self.rows]
        return "\n".join(out) + "\n"

    def html(self):
        h = "".join("<th>%s</th>" % html.escape(c) for c in self.header)
        body = "".join("<tr>%s</tr>" % "".join("<td>%s</td>" % html.escape(c) for c in r) for r in self.rows)
        return "<h3>%s</h3><table><thead><tr>%s</tr></thead><tbody>%s</tbody></table>" % (html.escape(self.title), h, body)


def svg(fig):
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def load(paths):
    docs = []
    for i, p in enumerate(paths):
        with open(p) as f:
            d = json.load(f)
        schema = d.get("schema")
        if schema not in ("parabench.results/1", "parabench-collectives-1"):
            sys.exit("report_page: %s: schema %r is neither parabench.results/1 nor parabench-collectives-1" % (p, schema))
        d["_label"] = "file %d" % (i + 1)
        d["_path"] = p
        docs.append(d)
    return docs


def case_names(docs):
    names = []
    for d in docs:
        for c in d.get("cases", []):
            if c["name"] not in names:
                names.append(c["name"])
    return names


def case_of(d, name):
    for c in d.get("cases", []):
        if c["name"] == name:
            return c
    return None


def environment(docs):
    keys = ["schema", "suite", "created", "git_sha", "host", "cpu_model", "cores", "world_size", "compiler",
            "mpi_library", "cuda_version", "nccl_version", "gpu"]
    t = Table("Environment", ["field"] + ["%s (%s)" % (d["_label"], os.path.basename(d["_path"])) for d in docs])
    for k in keys:
        vals = []
        for d in docs:
            env = d.get("env") or d.get("environment") or {}
            v = d.get(k, env.get(k))
            vals.append("—" if v is None else str(v))
        t.add([k] + vals)
    return t


def equivalence(docs, names):
    t = Table("Equivalence (worst rel_err / its tolerance)", ["case"] + ["%s status" % d["_label"] for d in docs] +
              ["%s worst" % d["_label"] for d in docs])
    for n in names:
        st, worst = [], []
        for d in docs:
            c = case_of(d, n)
            if not c:
                st.append("—"), worst.append("—")
                continue
            st.append(c["status"])
            w = None
            for ch in c.get("checks", []):
                if ch.get("rel_err") is None:
                    continue
                if w is None or ch["rel_err"] > w[0]:
                    w = (ch["rel_err"], ch["tol"], ch["tensor"])
            worst.append("—" if w is None else "%.2e / %.0e (%s)" % w)
        t.add([n] + st + worst)
    return t


def throughput(docs, names):
    head = ["case"]
    for d in docs:
        head += ["%s ms/step median (min–max)" % d["_label"], "%s tokens/s" % d["_label"], "%s TFLOP/s" % d["_label"],
                 "%s MFU" % d["_label"]]
    head += ["%s / file 1" % d["_label"] for d in docs[1:]]
    t = Table("Throughput", head)
    medians = {}
    for n in names:
        row, meds = [n], []
        for d in docs:
            c = case_of(d, n)
            tp = (c or {}).get("throughput") or {}
            m = tp.get("step_ms_median")
            meds.append(m)
            row += ["%s (%s–%s)" % (fmt(m, ".2f"), fmt(tp.get("step_ms_min"), ".2f"), fmt(tp.get("step_ms_max"), ".2f")),
                    fmt(tp.get("tokens_per_s"), ".0f"), fmt(tp.get("model_tflops"), ".4f"), fmt(tp.get("mfu"), ".3f")]
        row += [ratio(meds[0], m) for m in meds[1:]]
        medians[n] = meds
        t.add(row)
    return t, medians


def grouped_axes(groups, per_group, height):
    """A figure for `groups` groups of `per_group` bars each: (fig, ax, bar width)."""
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * groups * per_group + 2), height))
    return fig, ax, 0.8 / per_group


def finish_axes(fig, ax, labels, w, ylabel, title, **legend):
    """Group labels under the bars, the axis label and title; the figure as SVG."""
    ax.set_xticks([k + 0.4 - w / 2 for k in range(len(labels))])
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**legend)
    return svg(fig)


def file_bars(docs, names, values, ylabel, title, height=3.6, log=False, ylim=None):
    """One bar per file for each case: values[name][file index]."""
    fig, ax, w = grouped_axes(len(names), len(docs), height)
    for i, d in enumerate(docs):
        ax.bar([k + i * w for k in range(len(names))], [values[n][i] or 0 for n in names], w, label=d["_label"])
    if log:
        ax.set_yscale("log")
    if ylim:
        ax.set_ylim(*ylim)
    return finish_axes(fig, ax, names, w, ylabel, title)


def step_plot(docs, names, medians):
    return file_bars(docs, names, medians, "step time, median (ms)", "Step time per case", log=True)


CATEGORIES = ["params", "grads", "optimizer", "activations", "comm_buffers", "workspace", "host"]


def peaks(c):
    """category -> (measured, predicted) of the rank with the highest measured bytes."""
    out = {}
    for m in (c or {}).get("memory", []):
        k = m["category"]
        meas = m.get("measured_bytes") or 0
        if k not in out or meas > out[k][0]:
            out[k] = (meas, m.get("predicted_bytes"))
    return out


def memory(docs, names):
    head = ["case", "rank", "category"]
    for d in docs:
        head += ["%s measured (B)" % d["_label"], "%s predicted (B)" % d["_label"]]
    head += ["%s / file 1" % d["_label"] for d in docs[1:]]
    t = Table("Memory per rank and category, measured and predicted", head)
    for n in names:
        per = []  # per file: (rank, category) -> (measured, predicted)
        for d in docs:
            per.append({(m["rank"], m["category"]): (m.get("measured_bytes"), m.get("predicted_bytes"))
                        for m in (case_of(d, n) or {}).get("memory", [])})
        keys = sorted({k for p in per for k in p}, key=lambda k: (k[0], CATEGORIES.index(k[1]) if k[1] in CATEGORIES else 99))
        for k in keys:
            row = [n, str(k[0]), k[1]]
            for p in per:
                meas, pred = p.get(k, (None, None))
                row += [fmt(meas, "d"), fmt(pred, "d")]
            row += [ratio(per[0].get(k, (None,))[0], p.get(k, (None,))[0]) for p in per[1:]]
            t.add(row)
    return t


def memory_plot(docs, names):
    fig, ax, w = grouped_axes(len(names), len(docs), 3.8)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, d in enumerate(docs):
        bottom = [0.0] * len(names)
        for j, k in enumerate(CATEGORIES):
            vals = [peaks(case_of(d, n)).get(k, (0, 0))[0] / 2**20 for n in names]
            ax.bar([x + i * w for x in range(len(names))], vals, w, bottom=bottom, color=colors[j % len(colors)],
                   label=k if i == 0 else None, edgecolor="white", linewidth=0.3)
            bottom = [b + v for b, v in zip(bottom, vals)]
        pred = [sum((peaks(case_of(d, n)).get(k, (0, 0))[1] or 0) for k in CATEGORIES) / 2**20 for n in names]
        ax.scatter([x + i * w for x in range(len(names))], pred, marker="_", color="black", s=80,
                   label="predicted total" if i == 0 else None, zorder=3)
    return finish_axes(fig, ax, names, w, "MiB (highest rank per category)",
                       "Memory by category, measured (bars, one per file) and predicted (ticks)", fontsize=7, ncol=4)


def comm(docs, names):
    head = ["case", "group", "op", "phase"]
    for d in docs:
        head += ["%s bytes" % d["_label"], "%s predicted" % d["_label"], "%s bus bytes" % d["_label"]]
    t = Table("Communication (payload and bus bytes over the run, per group, op and phase)", head)
    for n in names:
        rows = {}
        for i, d in enumerate(docs):
            for r in (case_of(d, n) or {}).get("comm", []):
                key = (r["group"], r["op"], r["phase"])
                e = rows.setdefault(key, [[0, 0, 0.0] for _ in docs])
                e[i][0] += r["bytes"]
                e[i][1] += r.get("predicted_bytes") or 0
                e[i][2] += r.get("bus_bytes") or 0
        for key in sorted(rows):
            row = [n, *key]
            for v in rows[key]:
                row += [str(v[0]), str(v[1]), "%.0f" % v[2]]
            t.add(row)
    return t


def pipeline(docs, names):
    head = ["case", "stage"] + sum([["%s measured idle" % d["_label"], "%s simulated idle" % d["_label"]] for d in docs], [])
    t = Table("Pipelines (idle fraction per stage, measured against the schedule simulated at unit costs)", head)
    for n in names:
        per = [((case_of(d, n) or {}).get("pipeline") or {}).get("stages", []) for d in docs]
        for s in range(max((len(p) for p in per), default=0)):
            row = [n, str(s)]
            for p in per:
                st = p[s] if s < len(p) else {}
                row += [fmt(st.get("measured_idle_fraction"), ".3f"), fmt(st.get("simulated_idle_fraction"), ".3f")]
            t.add(row)
    return t


def pipeline_plot(d, n):
    """The measured timeline of the last step (one row per stage) of one file's case."""
    c = case_of(d, n) or {}
    ev = [e for e in (((c.get("pipeline") or {}).get("trace") or {}).get("traceEvents") or []) if e.get("ph") == "X"]
    if not ev:
        return ""
    stages = sorted({e["tid"] for e in ev})
    t0 = min(e["ts"] for e in ev)
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(stages)))
    colors = {"F": "#4c72b0", "B": "#dd8452", "W": "#55a868", "R": "#c44e52"}
    for e in ev:
        op = e["name"][0]
        ax.broken_barh([((e["ts"] - t0) / 1e3, e["dur"] / 1e3)], (e["tid"] - 0.4, 0.8), facecolors=colors.get(op, "#888"),
                       edgecolor="white", linewidth=0.3)
    ax.set_yticks(stages)
    ax.set_yticklabels(["stage %d" % s for s in stages], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms (measured, the last step)")
    ax.set_title("%s, %s: %s" % (n, d["_label"], c["pipeline"].get("schedule")), fontsize=9)
    return svg(fig)


def schedule_diagram(parabench, c):
    """The schedule simulated at unit costs, drawn by `parabench schedule --svg`."""
    pl = (c or {}).get("pipeline") or {}
    if not parabench or not pl.get("schedule"):
        return ""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.svg")
        cmd = [parabench, "schedule", "--kind", pl["schedule"], "--pp", str(pl["pp"]), "--vpp", str(pl.get("vpp", 1)),
               "--microbatches", str(pl["micro_batches"]), "--svg", path, "--trace", os.path.join(tmp, "t.json")]
        if subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
            return ""
        text = open(path).read()
        return text[text.index("<svg"):]


def balance(docs, names):
    """CP: attention pairs per rank; MoE: tokens per rank and the worst step's max/mean."""
    t = Table("Balance (context parallelism: attention pairs per rank; MoE: tokens received per rank)",
              ["case", "file", "kind", "per rank", "max / min or max / mean"])
    for n in names:
        for d in docs:
            c = case_of(d, n) or {}
            if c.get("cp"):
                cp = c["cp"]
                t.add([n, d["_label"], "CP %s (%s)" % (cp.get("kind"), cp.get("balance")),
                       " ".join(str(x) for x in cp.get("attention_pairs", [])), fmt(cp.get("attention_pairs_max_over_min"), ".3f")])
            if c.get("moe"):
                moe = c["moe"]
                worst = max((s.get("max_over_mean") or 0 for s in moe.get("steps", [])), default=None)
                t.add([n, d["_label"], "MoE %s, EP %s, dropped %s" % (moe.get("dispatcher"), moe.get("ep"), moe.get("dropped")),
                       " ".join(str(r.get("received")) for r in moe.get("ranks", [])), fmt(worst, ".3f")])
    return t


def balance_plot(docs, names):
    """Each rank's load over the mean (CP: attention pairs; MoE: tokens received), per case and file."""
    rows = []
    for n in names:
        for d in docs:
            c = case_of(d, n) or {}
            if c.get("cp"):
                rows.append(("%s %s" % (n, d["_label"]), c["cp"].get("attention_pairs", [])))
            if c.get("moe"):
                rows.append(("%s %s" % (n, d["_label"]), [r.get("received", 0) for r in c["moe"].get("ranks", [])]))
    rows = [(k, v) for k, v in rows if v and sum(v) > 0]
    if not rows:
        return ""
    fig, ax, w = grouped_axes(len(rows), max(len(v) for _, v in rows), 3.2)
    for i, (_, v) in enumerate(rows):
        mean = sum(v) / len(v)
        ax.bar([i + r * w for r in range(len(v))], [x / mean for x in v], w, color="#4c72b0")
    ax.axhline(1.0, color="black", linewidth=0.6)
    return finish_axes(fig, ax, [k for k, _ in rows], w, "rank's load / mean",
                       "Balance per rank (CP attention pairs, MoE tokens received)")


def overlap(docs, names):
    head = ["case"] + sum([["%s comm ms" % d["_label"], "%s exposed ms" % d["_label"], "%s hidden" % d["_label"]]
                           for d in docs], [])
    t = Table("Overlap (communication time, the part exposed, the hidden fraction)", head)
    hidden = {}
    for n in names:
        row, hs = [n], []
        for d in docs:
            o = (case_of(d, n) or {}).get("overlap") or {}
            row += [fmt(o.get("comm_ms"), ".2f"), fmt(o.get("exposed_ms"), ".2f"), fmt(o.get("hidden_fraction"), ".3f")]
            hs.append(o.get("hidden_fraction"))
        hidden[n] = hs
        t.add(row)
    return t, hidden


def overlap_plot(docs, names, hidden):
    shown = [n for n in names if any(h for h in hidden[n] if h)]
    if not shown:
        return ""
    return file_bars(docs, shown, hidden, "hidden fraction", "Hidden fraction of the communication time", height=3.2,
                     ylim=(0, 1))


def collectives(docs):
    cs = [d for d in docs if d.get("schema") == "parabench-collectives-1"]
    if not cs:
        return None, ""
    t = Table("Collectives (nccl-tests' algbw and busbw)", ["file", "op", "size (B)", "time (us)", "algbw (GB/s)",
                                                              "busbw (GB/s)", "#wrong"])
    ops = []
    for d in cs:
        for r in d["rows"]:
            t.add([d["_label"], r["op"], r["size_bytes"], "%.2f" % r["time_us"], "%.3f" % r["algbw_gbs"],
                   "%.3f" % r["busbw_gbs"], r["wrong"]])
            if r["op"] not in ops:
                ops.append(r["op"])
    fig, axes = plt.subplots(1, len(ops), figsize=(3.2 * len(ops), 3), squeeze=False)
    for ax, op in zip(axes[0], ops):
        for d in cs:
            rows = [r for r in d["rows"] if r["op"] == op]
            ax.plot([r["size_bytes"] for r in rows], [r["busbw_gbs"] for r in rows], marker=".", label=d["_label"])
        ax.set_xscale("log", base=2)
        ax.set_title(op, fontsize=9)
        ax.set_xlabel("bytes", fontsize=8)
    axes[0][0].set_ylabel("busbw (GB/s)")
    axes[0][0].legend(fontsize=7)
    return t, svg(fig)


STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em;
font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f0f0f0}
td:first-child{text-align:left}h2{border-bottom:1px solid #aaa}figure{margin:0 0 1.5em}
svg{max-width:100%;height:auto}"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", required=True)
    ap.add_argument("--md")
    ap.add_argument("--parabench", help="the parabench binary, for the schedule diagrams")
    ap.add_argument("results", nargs="+")
    a = ap.parse_args()
    docs = load(a.results)
    runs = [d for d in docs if d.get("schema") == "parabench.results/1"]
    names = case_names(runs)
    sections = []  # (heading, [tables], [svgs])
    sections.append(("Environment", [environment(docs)], []))
    if runs:
        sections.append(("Equivalence", [equivalence(runs, names)], []))
        tt, medians = throughput(runs, names)
        sections.append(("Throughput", [tt], [step_plot(runs, names, medians)]))
        sections.append(("Memory", [memory(runs, names)], [memory_plot(runs, names)]))
        sections.append(("Communication", [comm(runs, names)], []))
        piped = [n for n in names if any((case_of(d, n) or {}).get("pipeline") for d in runs)]
        if piped:
            plots = []
            for n in piped:
                plots.append(schedule_diagram(a.parabench, next(case_of(d, n) for d in runs if case_of(d, n))))
                plots += [pipeline_plot(d, n) for d in runs]
            sections.append(("Pipelines", [pipeline(runs, names)], plots))
        if any((case_of(d, n) or {}).get(k) for d in runs for n in names for k in ("cp", "moe")):
            sections.append(("Balance", [balance(runs, names)], [balance_plot(runs, names)]))
        if any((case_of(d, n) or {}).get("overlap") for d in runs for n in names):
            ot, hidden = overlap(runs, names)
            sections.append(("Overlap", [ot], [overlap_plot(runs, names, hidden)]))
    ct, cplot = collectives(docs)
    if ct:
        sections.append(("Collectives", [ct], [cplot]))
    files = ", ".join("%s: %s" % (d["_label"], d["_path"]) for d in docs)
    body = "".join("<h2>%s</h2>%s%s" % (html.escape(h), "".join("<figure>%s</figure>" % s for s in svgs if s),
                                         "".join(t.html() for t in tables)) for h, tables, svgs in sections)
    page = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>parabench report</title><style>%s</style></head>"
            "<body><h1>parabench report</h1><p>%s</p>%s</body></html>\n") % (STYLE, html.escape(files), body)
    tmp = a.html + ".tmp"
    with open(tmp, "w") as f:
        f.write(page)
    os.replace(tmp, a.html)
    if a.md:
        md = "# parabench report\n\n%s\n\n" % files + "\n".join(
            "## %s\n\n%s" % (h, "\n".join(t.markdown() for t in tables)) for h, tables, _ in sections)
        tmp = a.md + ".tmp"
        with open(tmp, "w") as f:
            f.write(md)
        os.replace(tmp, a.md)


if __name__ == "__main__":
    main()
