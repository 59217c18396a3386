#!/usr/bin/env python3
"""scripts/device/join_gpu_bench.py on two hand-written inputs (gpu_bench_fixtures/: a
google-benchmark JSON of bench_cuda_kernels and a peer_pytorch.py JSON). The expected
values are computed here from the fixtures, not copied from the join's output:
  ratio = the fastest PyTorch impl's median / ours' median; each ceiling the higher of
  ours and PyTorch's; fraction = rate / the ceiling of the row's unit;
  the fastest impl is the one named; an op on one side only, or failed in ours, is one
  "missing: ..." line; an unreadable input is one line and exit code 1; --write-ours merges.
  test_gpu_bench_join.py <repository root>
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
JOIN = os.path.join(ROOT, "scripts", "device", "join_gpu_bench.py")
FIX = os.path.join(ROOT, "suites", "unit", "gpu_bench_fixtures")
OURS, PEER = os.path.join(FIX, "ours.json"), os.path.join(FIX, "peer.json")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}", file=sys.stderr)


def close(a, b):
    return a is not None and b is not None and abs(a - b) <= 1e-12 * max(abs(a), abs(b))


def run(*args):
    return subprocess.run([sys.executable, JOIN, *args], capture_output=True, text=True)


def expected():
    """op -> (ratio, ours fraction, peer fraction, best impl) from the fixtures alone."""
    ours = {b["name"].split("/iterations:")[0]: b for b in json.load(open(OURS))["benchmarks"]}
    peer = json.load(open(PEER))
    gemm = max(ours["ceiling_gemm"]["FLOP/s"], peer["ceilings"]["gemm_flop_per_s"])
    copy = max(ours["ceiling_copy"]["bytes/s"], peer["ceilings"]["copy_bytes_per_s"])
    out = {}
    for op, b in ours.items():
        if b.get("error_occurred"):
            continue
        rows = [r for r in peer["rows"] if r["op"] == op]
        if not rows:
            continue
        best = min(rows, key=lambda r: r["ms_median"])
        unit = "FLOP/s" if "FLOP/s" in b else "bytes/s"
        ceil = gemm if unit == "FLOP/s" else copy
        out[op] = (best["ms_median"] / b["ms_median"], b[unit] / ceil, best["rate"] / ceil, best["impl"])
    return out


def main():
    exp = expected()
    check(set(exp) == {"ceiling_copy", "ceiling_gemm", "attention_fwd/S4096", "rmsnorm_fwd"},
          f"fixtures give the joined ops (got {sorted(exp)})")
    with tempfile.TemporaryDirectory() as d:
        md_path, js_path, merged = (os.path.join(d, n) for n in ("t.md", "t.json", "merged.json"))
        p = run("--ours", OURS, OURS, "--peer", PEER, "--md", md_path, "--json", js_path, "--write-ours", merged)
        check(p.returncode == 0, f"join exits 0 on readable inputs (rc {p.returncode}: {p.stderr.strip()})")
        joined = {r["op"]: r for r in json.load(open(js_path))["rows"]}
        md = open(md_path).read()
        check(md == p.stdout, "the Markdown file is what was printed")
        for op, (ratio, f_ours, f_peer, impl) in exp.items():
            r = joined.get(op, {})
            check(close(r.get("ratio"), ratio), f"{op}: ratio {r.get('ratio')} == {ratio}")
            check(close(r.get("ours_fraction"), f_ours), f"{op}: ours of ceiling {r.get('ours_fraction')} == {f_ours}")
            check(close(r.get("peer_fraction"), f_peer),
                  f"{op}: PyTorch of ceiling {r.get('peer_fraction')} == {f_peer}")
            check(r.get("peer_impl") == impl, f"{op}: the fastest PyTorch impl {r.get('peer_impl')} == {impl}")
            line = next((ln for ln in md.splitlines() if ln.startswith(f"| {op} |")), "")
            cells = [c.strip() for c in line.strip("|").split("|")]
            check(len(cells) == 10 and cells[7] == f"{ratio:.2f}" and cells[8] == f"{f_ours:.2f}"
                  and cells[9] == f"{f_peer:.2f}" and cells[5] == impl,
                  f"{op}: Markdown row has ratio {ratio:.2f}, fractions {f_ours:.2f} {f_peer:.2f}, "
                  f"impl {impl}: {line!r}")
        for want in ("missing: layer_fwdbwd/S4096: no row in ours",
                     "missing: rope_bwd: no row in PyTorch (eager: OutOfMemoryError",
                     "missing: moe_up_fwd: ours failed: grouped_linear_forward"):
            check(any(ln.startswith(want) for ln in p.stderr.splitlines()), f"stderr has the line '{want}...'")
            check(f"- {want}" in md, f"the Markdown lists '{want}...'")
        check(joined["layer_fwdbwd/S4096"]["ratio"] is None and joined["rope_bwd"]["peer_ms"] is None,
              "a one-sided row has no ratio")
        n_ours = len(json.load(open(OURS))["benchmarks"])
        check(len(json.load(open(merged))["benchmarks"]) == 2 * n_ours, "--write-ours merges both files")
        bad = run("--ours", OURS, "--peer", os.path.join(d, "absent.json"))
        lines = [ln for ln in bad.stderr.splitlines() if ln.startswith("join_gpu_bench: cannot read PyTorch file")]
        check(bad.returncode == 1 and len(lines) == 1, f"an unreadable input: exit 1 and one line ({bad.stderr!r})")
        check("| rmsnorm_fwd |" in bad.stdout, "the table is still made from the readable input")
    print("test_gpu_bench_join:", "FAILED" if failures else "ok", f"({len(failures)} failures)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
