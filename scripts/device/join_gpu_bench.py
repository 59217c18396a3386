#!/usr/bin/env python3
"""One side-by-side table of our CUDA kernels and PyTorch's at the same shapes (issue 19):
bench_cuda_kernels' google-benchmark JSON (one or more files: bench-gpu.sh runs it group by
group) joined by op name with scripts/device/peer_pytorch.py's JSON.

Per op (ours' order, then the ops only PyTorch has):
  ours ms            the median of ours (counter ms_median)
  PyTorch ms         the fastest PyTorch impl's median (its impl named: flash, compiled, ...)
  ratio              PyTorch ms / ours ms: > 1 means ours is faster (the targets: >= 1.0)
  of ceiling         rate / the matching ceiling: FLOP/s rows / the GEMM ceiling, bytes/s
                     rows / the copy ceiling; each ceiling the higher of the two measured in
                     the run (ours: ceiling_gemm, ceiling_copy; PyTorch's: ceilings{})
An op present on one side only is a row with "-" and one line under "Missing rows" (and on
stderr) saying which side lacks it and, for PyTorch, why it was skipped where it says.

  join_gpu_bench.py --ours ours.json [more.json ...] --peer peer.json
                    [--md table.md] [--json joined.json] [--write-ours merged.json]
Prints the Markdown table; --md/--json write it (atomically: tmp file, os.replace);
--write-ours writes the ours files merged into one google-benchmark JSON. An unreadable
input is one line on stderr, the table is made from the rest, and the exit code is 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

CEILING_OF_UNIT = {"FLOP/s": "gemm", "bytes/s": "copy"}


def read_json(path, what, problems):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        problems.append(f"join_gpu_bench: cannot read {what} file {path}: {e}")
        return None


def op_of_benchmark(name: str) -> str:
    """google-benchmark's name without the suffixes it adds ("/iterations:20/manual_time")."""
    for suffix in ("/iterations:", "/repeats:", "/manual_time", "/real_time"):
        i = name.find(suffix)
        if i >= 0:
            name = name[:i]
    return name


def ours_rows(docs) -> dict:
    """op -> {ms_median, ms_min, ms_max, rate, unit, shape, error} from bench_cuda_kernels."""
    rows = {}
    for doc in docs:
        for b in doc.get("benchmarks", []):
            if b.get("run_type") == "aggregate":
                continue
            op = op_of_benchmark(b.get("run_name") or b["name"])
            if b.get("error_occurred"):
                rows[op] = {"error": b.get("error_message", "error"), "shape": b.get("label", "")}
                continue
            unit = "FLOP/s" if "FLOP/s" in b else "bytes/s" if "bytes/s" in b else None
            rows[op] = {"ms_median": b.get("ms_median"), "ms_min": b.get("ms_min"), "ms_max": b.get("ms_max"),
                        "rate": b.get(unit) if unit else None, "unit": unit, "shape": b.get("label", "")}
    return rows


def peer_rows(doc) -> tuple[dict, dict]:
    """op -> the fastest PyTorch row; op -> the skip reasons of that op."""
    best, skipped = {}, {}
    for r in (doc or {}).get("rows", []):
        if r.get("ms_median") is None:
            continue
        cur = best.get(r["op"])
        if cur is None or r["ms_median"] < cur["ms_median"]:
            best[r["op"]] = r
    for s in (doc or {}).get("skipped", []):
        skipped.setdefault(s["op"], []).append(f"{s['impl']}: {s['reason']}")
    return best, skipped


def ceilings(ours: dict, peer_doc) -> dict:
    """kind -> (value, source): the higher of ours and PyTorch's per kind."""
    pc = (peer_doc or {}).get("ceilings", {})
    cands = {"gemm": [(ours.get("ceiling_gemm", {}).get("rate"), "ours"), (pc.get("gemm_flop_per_s"), "PyTorch")],
             "copy": [(ours.get("ceiling_copy", {}).get("rate"), "ours"), (pc.get("copy_bytes_per_s"), "PyTorch")]}
    out = {}
    for kind, vals in cands.items():
        vals = [(v, s) for v, s in vals if v]
        out[kind] = max(vals) if vals else (None, None)
    return out


def fraction(rate, unit, ceil):
    if not rate or not unit:
        return None
    c = ceil.get(CEILING_OF_UNIT[unit], (None, None))[0]
    return rate / c if c else None


def join(ours: dict, peer_best: dict, peer_skipped: dict, ceil: dict):
    """The joined rows and the missing-row lines."""
    order = list(ours) + [op for op in peer_best if op not in ours]
    rows, missing = [], []
    for op in order:
        o, p = ours.get(op), peer_best.get(op)
        r = {"op": op, "shape": (o or {}).get("shape") or (p or {}).get("shape", ""),
             "ours_ms": None, "ours_rate": None, "unit": None, "ours_fraction": None,
             "peer_impl": None, "peer_ms": None, "peer_rate": None, "peer_fraction": None, "ratio": None}
        if o is None:
            missing.append(f"missing: {op}: no row in ours (bench_cuda_kernels has no such benchmark)")
        elif "error" in o:
            missing.append(f"missing: {op}: ours failed: {o['error']}")
        else:
            r.update(ours_ms=o["ms_median"], ours_rate=o["rate"], unit=o["unit"],
                     ours_fraction=fraction(o["rate"], o["unit"], ceil))
        if p is None:
            why = "; ".join(peer_skipped.get(op, [])) or "not measured"
            missing.append(f"missing: {op}: no row in PyTorch ({why})")
        else:
            r.update(peer_impl=p["impl"], peer_ms=p["ms_median"], peer_rate=p.get("rate"),
                     peer_fraction=fraction(p.get("rate"), p.get("unit"), ceil))
            r["unit"] = r["unit"] or p.get("unit")
        if r["ours_ms"] and r["peer_ms"]:
            r["ratio"] = r["peer_ms"] / r["ours_ms"]
        rows.append(r)
    return rows, missing


def fmt_rate(rate, unit) -> str:
    if not rate or not unit:
        return "-"
    return f"{rate / 1e12:.1f} TFLOP/s" if unit == "FLOP/s" else f"{rate / 1e9:.0f} GB/s"


def fmt(x, spec) -> str:
    return "-" if x is None else format(x, spec)


def markdown(rows, missing, ceil, ours_ctx: dict, peer_env: dict) -> str:
    g, c = ceil["gemm"], ceil["copy"]
    head = [f"GPU kernels side by side: ours ({ours_ctx.get('device', '?')}) and PyTorch "
            f"({peer_env.get('torch', '?')} on {peer_env.get('gpu', peer_env.get('device', '?'))}).",
            f"Ceilings: GEMM {fmt_rate(g[0], 'FLOP/s')} ({g[1] or '-'}), copy {fmt_rate(c[0], 'bytes/s')} "
            f"({c[1] or '-'}). speed-up = PyTorch ms / ours ms (> 1: ours faster).", "",
            "| op | shape | ours ms | ours rate | PyTorch ms | PyTorch impl | PyTorch rate | speed-up (PyTorch ms / ours ms) | ours of ceiling "
            "| PyTorch of ceiling |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head.append(f"| {r['op']} | {r['shape']} | {fmt(r['ours_ms'], '.4f')} | "
                    f"{fmt_rate(r['ours_rate'], r['unit'])} | "
                    f"{fmt(r['peer_ms'], '.4f')} | {r['peer_impl'] or '-'} | {fmt_rate(r['peer_rate'], r['unit'])} | "
                    f"{fmt(r['ratio'], '.2f')} | {fmt(r['ours_fraction'], '.2f')} | {fmt(r['peer_fraction'], '.2f')} |")
    if missing:
        head += ["", "Missing rows:"] + [f"- {m}" for m in missing]
    return "\n".join(head) + "\n"


def write_atomic(path, text):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="ours (bench_cuda_kernels JSON) beside PyTorch (peer_pytorch.py JSON)")
    p.add_argument("--ours", nargs="+", required=True)
    p.add_argument("--peer", required=True)
    p.add_argument("--md", default="")
    p.add_argument("--json", default="")
    p.add_argument("--write-ours", default="")
    a = p.parse_args(argv)
    problems = []
    ours_docs = [d for d in (read_json(f, "ours", problems) for f in a.ours) if d is not None]
    peer_doc = read_json(a.peer, "PyTorch", problems)
    ours = ours_rows(ours_docs)
    best, skipped = peer_rows(peer_doc)
    ceil = ceilings(ours, peer_doc)
    rows, missing = join(ours, best, skipped, ceil)
    ctx = ours_docs[0].get("context", {}) if ours_docs else {}
    env = (peer_doc or {}).get("env", {})
    md = markdown(rows, missing, ceil, ctx, env)
    for line in problems + missing:
        print(line, file=sys.stderr)
    print(md, end="")
    if a.md:
        write_atomic(a.md, md)
    if a.json:
        doc = {"ceilings": {k: {"value": v[0], "source": v[1]} for k, v in ceil.items()}, "rows": rows,
               "missing": missing, "problems": problems, "ours_context": ctx, "peer_env": env}
        write_atomic(a.json, json.dumps(doc, indent=1) + "\n")
    if a.write_ours and ours_docs:
        merged = {"context": ctx, "benchmarks": [b for d in ours_docs for b in d.get("benchmarks", [])]}
        write_atomic(a.write_ours, json.dumps(merged, indent=1) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
