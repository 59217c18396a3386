#!/usr/bin/env bash
# The kernels side by side on the GPU machine (issue 19): PyTorch's peer
# (scripts/device/peer_pytorch.py), our kernels (suites/bench/bench_cuda_kernels, built
# here), and one joined table (scripts/device/join_gpu_bench.py): ours, PyTorch, ratio,
# fraction of the ceilings measured in the same run. Run from the repository root with
# .device/ carried (scripts/device/fetch-debs.sh: MPICH, Eigen, google-benchmark, ...), e.g.
#   run carry=[".device"] timeout_s=590 command="scripts/device/bench-gpu.sh"
# Steps, in order (a failure is recorded and the next step runs; the peer runs first since
# it needs no build):
#   peer       peer_pytorch.py --reps $PB_BENCH_REPS            -> <tag>-peer.json
#   deps       the carried .deb files unpacked into $PB_PREFIX (skipped if already there)
#   configure  cmake with PB_BUILD_BENCH=ON (an existing build folder keeps its settings)
#   build      only bench_cuda_kernels
#   ours-*     bench_cuda_kernels one group at a time (a crash loses one group), each a JSON
#              under the work folder; the attention groups with $PB_BENCH_ATTN_REPS reps
#   join       the table                                      -> <tag>-kernels.{md,json}
#                                                              and <tag>-ours.json (merged)
# Output ($OUT when set, else $PB_BENCH_GPU_OUT, else build-gpu/bench-out), written as each
# step ends so that a run killed at its limit keeps what finished; five files, since the
# device tool returns at most 8:
#   bench-gpu.log                      every step's output and its status line
#   results/gpu/<tag>-{peer,ours}.json, <tag>-kernels.{md,json}     (<tag> = <GPU>-<date>)
# Environment: PB_BENCH_REPS (20), PB_BENCH_ATTN_REPS (5), PB_BUILD_DIR (build-gpu),
# PB_PREFIX (/tmp/pb-deps), PB_DEBS_DIR (.device/debs), PB_PEER_ARGS (extra peer flags, e.g.
# --no-compile), PB_BUILD_TIMEOUT (420 s: under the 600 s per device call; rerun to resume), PB_PEER_TIMEOUT (480 s), PB_OURS_TIMEOUT (240 s
# per group). PB_BENCH_GPU_DRY_RUN=1 prints the commands instead of running them.
# The exit code is non-zero when any step failed.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=scripts/device/deps.sh
. scripts/device/deps.sh
prefix=${PB_PREFIX:-/tmp/pb-deps}
debs_dir=${PB_DEBS_DIR:-.device/debs}
build=${PB_BUILD_DIR:-build-gpu}
out=${OUT:-${PB_BENCH_GPU_OUT:-$build/bench-out}}
res=$out/results/gpu
work=$build/bench-parts  # the per-group JSONs: not under $OUT (the file limit)
reps=${PB_BENCH_REPS:-20}
attn_reps=${PB_BENCH_ATTN_REPS:-5}
log=$out/bench-gpu.log
mkdir -p "$res" "$work"
: >"$log"
failed=0

# step NAME LIMIT CMD...: CMD under `timeout LIMIT`, its output appended to the log, one
# status line in the log and on stdout; returns CMD's exit code (124: ran past LIMIT).
step() {
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  echo "---- $name: $*" >>"$log"
  if [ "${PB_BENCH_GPU_DRY_RUN:-0}" = 1 ]; then
    echo "dry run: $*" >>"$log"
    rc=0
  else
    timeout -k 10 "$limit" "$@" >>"$log" 2>&1
    rc=$?
  fi
  local line="== $name: rc $rc, $(($(date +%s) - t0)) s"
  [ "$rc" -eq 124 ] && line="$line (ran past $limit s)"
  echo "$line" | tee -a "$log"
  [ "$rc" -eq 0 ] || failed=1
  return "$rc"
}

gpu_name() {
  local n
  n=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-')
  echo "${n:-gpu}"
}

unpack_debs() {
  if [ "${PB_BENCH_GPU_DRY_RUN:-0}" = 1 ]; then
    step deps 600 dpkg -x "$debs_dir/*.deb" "$prefix"
    return
  fi
  if [ -d "$prefix/usr/include/benchmark" ] && [ -d "$prefix/usr/include/x86_64-linux-gnu/mpich" ]; then
    echo "== deps: already in $prefix" | tee -a "$log"
    return 0
  fi
  local debs=("$debs_dir"/*.deb)
  if [ ! -e "${debs[0]}" ]; then
    echo "== deps: rc 1, no $debs_dir/*.deb (run scripts/device/fetch-debs.sh and carry .device)" | tee -a "$log"
    failed=1
    return 1
  fi
  mkdir -p "$prefix"
  step deps 600 sh -c "$DEPS_UNPACK" sh "$prefix" "${debs[@]}"
}

# As scripts/device/gpu-suite.sh configures, with the benchmarks on.
configure() {
  if [ -f "$build/CMakeCache.txt" ]; then
    step configure 600 cmake -S . -B "$build" -DPB_BUILD_BENCH=ON
    return
  fi
  deps_cmake_args "$prefix"
  step configure 600 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPB_BUILD_BENCH=ON \
    "${DEPS_CMAKE_ARGS[@]}"
}

# ours NAME FILTER REPS: one group of bench_cuda_kernels into the work folder.
ours() {
  rm -f "$work/ours-$1.json"
  step "ours-$1" "${PB_OURS_TIMEOUT:-240}" "$build/bin/bench_cuda_kernels" --reps="$3" --benchmark_filter="$2" \
    --benchmark_out="$work/ours-$1.json" --benchmark_out_format=json
}

export LD_LIBRARY_PATH=$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONUNBUFFERED=1
tag=$(gpu_name)-$(date -u +%Y%m%d)
peer_json=$res/$tag-peer.json

# shellcheck disable=SC2086  # PB_PEER_ARGS is flag words
step peer "${PB_PEER_TIMEOUT:-480}" python3 scripts/device/peer_pytorch.py --reps "$reps" --json "$peer_json" \
  ${PB_PEER_ARGS:-}
built=0
if unpack_debs && configure && step build "${PB_BUILD_TIMEOUT:-420}" cmake --build "$build" -j "$(nproc)" \
  --target bench_cuda_kernels; then
  built=1
fi
if [ "$built" = 1 ]; then
  ours ceilings '^ceiling_' "$reps"
  ours elementwise '^(rmsnorm|swiglu|rope)_' "$reps"
  ours moe '^(moe|dense)_' "$reps"
  ours attention-4096 '^attention_.*/S4096' "$attn_reps"
  ours attention-8192 '^attention_.*/S8192' "$attn_reps"
else
  echo "== ours: skipped, bench_cuda_kernels was not built" | tee -a "$log"
fi
parts=("$work"/ours-*.json)
[ -e "${parts[0]}" ] || parts=("$work/ours-none.json")  # the join says it cannot read it
step join 120 python3 scripts/device/join_gpu_bench.py --ours "${parts[@]}" --peer "$peer_json" \
  --md "$res/$tag-kernels.md" --json "$res/$tag-kernels.json" --write-ours "$res/$tag-ours.json"
[ -f "$res/$tag-kernels.md" ] && cat "$res/$tag-kernels.md"
exit "$failed"
