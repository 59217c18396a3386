#!/usr/bin/env bash
# The CPU speed table (README "CPU speed", issue 18): parabench's optimized backend and
# PyTorch, the same model and training step on one rank of this machine, side by side in
# one run, for 1 and 2 threads, with the ratio ours / PyTorch's best.
#
#   scripts/bench_cpu.sh [--threads "1 2"] [--reps 9] [--out results/cpu_speed/NAME]
#
# Ours: bench_step (suites/bench/bench_step.cc; median over --reps independent steps).
# PyTorch: scripts/bench_torch_cpu.py (eager and SDPA attention; median of steps 2..12),
# which needs torch (pip install torch; it is not part of the build). The runs alternate
# (ours, PyTorch) per thread count so that drift of the machine hits both. Writes NAME.json
# and NAME.md with --out. Needs a build with the benches (scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
threads="1 2"
reps=9
out=""
usage='(--threads "1 2", --reps N, --out PATH)'
while [ $# -gt 0 ]; do
  case "$1" in
    --threads | --reps | --out)
      [ $# -ge 2 ] || { echo "bench_cpu.sh: error: $1 needs a value $usage" >&2; exit 2; } ;;&
    --threads) threads="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "bench_cpu.sh: error: unknown argument '$1' $usage" >&2; exit 2 ;;
  esac
done
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || { echo "bench_cpu.sh: error: --reps '$reps' (a positive integer)" >&2; exit 2; }
[ -n "${threads// /}" ] || { echo "bench_cpu.sh: error: --threads is empty (e.g. \"1 2\")" >&2; exit 2; }
for t in $threads; do
  [[ "$t" =~ ^[1-9][0-9]*$ ]] || { echo "bench_cpu.sh: error: --threads '$threads' (positive integers)" >&2; exit 2; }
done
build=${PB_BUILD_DIR:-build}
bench="$build/bin/bench_step"
[ -x "$bench" ] || { echo "bench_cpu.sh: error: $bench not built (scripts/bootstrap.sh builds it)" >&2; exit 2; }
for t in $threads; do  # the thread counts bench_step registers
  OMPI_MCA_hwloc_base_binding_policy=none "$bench" --benchmark_list_tests --benchmark_filter="BM_TrainStep/threads:$t/" \
    2> /dev/null | grep -q . || {
    have=$(OMPI_MCA_hwloc_base_binding_policy=none "$bench" --benchmark_list_tests 2> /dev/null |
      sed -n 's|.*/threads:\([0-9]*\)/.*|\1|p' | sort -un | paste -sd' ')
    echo "bench_cpu.sh: error: bench_step has no $t-thread benchmark (it has: ${have:-none})" >&2
    exit 2
  }
done
python3 -c "import torch" 2> /dev/null || { echo "bench_cpu.sh: error: PyTorch is not installed (pip install torch)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for t in $threads; do
  echo "threads $t: parabench ..." >&2
  OMPI_MCA_hwloc_base_binding_policy=none "$bench" --benchmark_filter="BM_TrainStep/threads:$t/" \
    --benchmark_repetitions="$reps" --benchmark_format=json > "$tmp/ours-$t.json"
  echo "threads $t: pytorch ..." >&2
  python3 scripts/bench_torch_cpu.py --threads "$t" --json > "$tmp/torch-$t.jsonl"
done
python3 - "$tmp" "$threads" "$out" <<'PY'
import json, os, platform, subprocess, sys, datetime
tmp, threads, out = sys.argv[1], sys.argv[2].split(), sys.argv[3]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
rows = []
for t in threads:
    ours = json.load(open(f"{tmp}/ours-{t}.json"))
    med = [b for b in ours["benchmarks"] if b.get("aggregate_name") == "median"]
    times = [b["real_time"] for b in ours["benchmarks"] if b.get("run_type") == "iteration"]
    peer = {r["attn"]: r for r in map(json.loads, open(f"{tmp}/torch-{t}.jsonl"))}
    best = min(peer.values(), key=lambda r: r["step_ms_median"])
    ours_ms = med[0]["real_time"]
    rows.append({"threads": int(t), "parabench_ms": ours_ms, "parabench_min_ms": min(times),
                 "parabench_max_ms": max(times), "parabench_steps": len(times),
                 "torch_eager_ms": peer["eager"]["step_ms_median"], "torch_sdpa_ms": peer["sdpa"]["step_ms_median"],
                 "torch_best": best["attn"], "ratio": ours_ms / best["step_ms_median"],
                 "torch_version": best["torch"], "torch_cpu_capability": best.get("cpu_capability", "?"),
                 "torch_blas": best.get("blas", "?"), "cpu_gemm": ours.get("context", {}).get("cpu_gemm", "?")})
head = ("| threads | parabench ms/step | PyTorch eager | PyTorch SDPA | ratio (ours / PyTorch's best) |\n"
        "|---:|---:|---:|---:|---:|\n")
lines = [f"| {r['threads']} | {r['parabench_ms']:.1f} | {r['torch_eager_ms']:.1f} | {r['torch_sdpa_ms']:.1f} | "
         f"{r['ratio']:.2f} |" for r in rows]
md = (f"CPU: {cpu} ({os.cpu_count()} cores); parabench SGEMM {rows[0]['cpu_gemm']}; PyTorch {rows[0]['torch_version']} "
      f"({rows[0]['torch_blas']}, {rows[0]['torch_cpu_capability']}), "
      f"{datetime.date.today().isoformat()}. Default model (H 256, A 8, G 4, F 768, V 2048, L 4; B 4, S 128; fp32), "
      "one rank, forward + backward + clip + AdamW; medians (parabench over "
      f"{rows[0]['parabench_steps']} independent steps, PyTorch over steps 2..12).\n\n" + head + "\n".join(lines) + "\n")
print(md)
if out:
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    doc = {"schema": "parabench.cpu_speed/1", "cpu": cpu, "cores": os.cpu_count(), "host": platform.node(),
           "date": datetime.date.today().isoformat(),
           "git_sha": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
           "command": "scripts/bench_cpu.sh", "rows": rows}
    for path, text in ((out + ".json", json.dumps(doc, indent=1) + "\n"), (out + ".md", md)):
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    print(f"written: {out}.json, {out}.md", file=sys.stderr)
PY
