#!/usr/bin/env bash
# Everything the GPU machine needs, in one command (run there from the repository root,
# with .device/ carried; see scripts/device/fetch-debs.sh). Steps, in order:
#   gpu-info       nvidia-smi: name, driver, memory, compute mode (gpu.csv)
#   deps           unpack the carried Debian packages into a prefix (never into /)
#   configure      cmake with nvcc (sm_90), Debian's MPICH, NCCL (pip wheel if importable)
#   build          only the targets it runs: parabench and the gpu-labelled test binaries
#   mpi-preflight  the first environment in which `mpiexec -n 2` starts parabench and MPI
#                  moves a message (UCX over shared memory and TCP, then the fallbacks)
#   gpu-tests      ctest -L gpu
#   smoke-np1      the smoke suite on the CUDA backend with 1 rank (NCCL where it can)
#   smoke-np4      the same with 4 ranks sharing the GPU (MPI, staged through the host);
#                  skipped with a line unless the GPU's compute mode is Default
# Every step runs whatever failed before it (a failure is recorded, not fatal), and each
# one's log and results are written straight into the output folder as the step ends, so a
# run killed at its time limit still returns what it did:
#   $OUT (when set; else $PB_GPU_SUITE_OUT, else build-gpu/suite-out)
#     status.tsv    step, exit code (or "skip"), seconds, note -- one line per finished step
#     status.md     the same as a table, rewritten after every step
#     now.txt       the step running now (what a killed run was doing)
#     logs/<step>.log, gpu.csv, mpi-env.txt, results/gpu/<device>-<date>-np*.{json,md}
# The exit code is non-zero when any step failed.
#
# Tests (suites/unit/test_gpu_suite.sh) and dry runs: PB_GPU_SUITE_RUNNER=<program> runs
# every command as `<program> <step> <command...>` (a stub decides the exit codes);
# PB_GPU_SUITE_DRY_RUN=1 prints each command instead of running it (exit 0).
# Step time limits (seconds): PB_BUILD_TIMEOUT (420: under the device tool's 600 s per call, so a
# first call that cannot finish the build still returns its status; ninja resumes the build in
# the next call, whose build outputs are kept), PB_TEST_TIMEOUT (900),
# PB_SMOKE_TIMEOUT (900), PB_PREFLIGHT_TIMEOUT (20 per command tried).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=scripts/device/deps.sh
. scripts/device/deps.sh
prefix=${PB_PREFIX:-/tmp/pb-deps}
debs_dir=${PB_DEBS_DIR:-.device/debs}
build=${PB_BUILD_DIR:-build-gpu}
out=${OUT:-${PB_GPU_SUITE_OUT:-$build/suite-out}}
mkdir -p "$out/logs" "$out/results/gpu"
status_tsv=$out/status.tsv
printf 'step\trc\tseconds\tnote\n' >"$status_tsv"
failed=0

# ---- the step machinery ---------------------------------------------------------------

# The status table as Markdown, rewritten from status.tsv.
write_status_md() {
  {
    echo "| step | rc | seconds | note |"
    echo "|---|---|---|---|"
    tail -n +2 "$status_tsv" | while IFS=$'\t' read -r s rc secs note; do
      echo "| $s | $rc | $secs | $note |"
    done
  } >"$out/status.md"
}

# record STEP RC SECONDS NOTE: one line of the table, written now.
record() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$status_tsv"
  write_status_md
  echo "== $1: rc $2, $3 s${4:+ ($4)}"
}

# invoke STEP CMD...: the command itself, or through the runner hook / the dry run.
invoke() {
  local step=$1
  shift
  if [ -n "${PB_GPU_SUITE_RUNNER:-}" ]; then
    "$PB_GPU_SUITE_RUNNER" "$step" "$@"
  elif [ "${PB_GPU_SUITE_DRY_RUN:-0}" = 1 ]; then
    echo "dry run: $*"
  else
    "$@"
  fi
}

# run_step STEP LIMIT NOTE CMD...: runs CMD under `timeout LIMIT` with its output in
# logs/STEP.log, records the step and returns its exit code (124: ran past its limit).
run_step() {
  local step=$1 limit=$2 note=$3
  shift 3
  local t0 rc
  t0=$(date +%s)
  printf '%s started %s\n' "$step" "$(date -u +%FT%TZ)" >"$out/now.txt"
  invoke "$step" timeout -k 10 "$limit" "$@" >"$out/logs/$step.log" 2>&1
  rc=$?
  [ "$rc" -eq 124 ] && note="${note:+$note; }ran past ${limit} s"
  record "$step" "$rc" "$(($(date +%s) - t0))" "$note"
  [ "$rc" -eq 0 ] || failed=1
  return "$rc"
}

# skip_step STEP REASON: recorded as skipped (not a failure).
skip_step() {
  record "$1" skip 0 "$2"
  echo "$1 skipped: $2" >"$out/logs/$1.log"
}

# ---- the steps ----------------------------------------------------------------------------

# gpu-info: the device, and its compute mode (4 ranks on one GPU need Default).
gpu_info() {
  run_step gpu-info 60 "" nvidia-smi --query-gpu=name,driver_version,memory.total,compute_mode \
    --format=csv,noheader || return 0
  grep -E '^[^,]+(, [^,]+){3}$' "$out/logs/gpu-info.log" >"$out/gpu.csv"  # one line per GPU
}
# The first GPU's field N (1-based) of gpu.csv, trimmed; "" without it.
gpu_field() { [ -s "$out/gpu.csv" ] && head -1 "$out/gpu.csv" | cut -d, -f"$1" | sed 's/^ *//; s/ *$//'; }

# deps: the carried Debian packages unpacked into the prefix.
unpack_debs() {
  local debs=("$debs_dir"/*.deb)
  if [ ! -e "${debs[0]}" ]; then
    record deps 1 0 "no $debs_dir/*.deb (run scripts/device/fetch-debs.sh and carry .device)"
    failed=1
    return 1
  fi
  mkdir -p "$prefix"
  run_step deps 600 "${#debs[@]} packages" sh -c "$DEPS_UNPACK" sh "$prefix" "${debs[@]}"
}

# The folder of the pip wheel's NCCL (nvidia-nccl-cu*: nvidia/nccl/{lib,include}), or "".
nccl_wheel_root() {
  invoke nccl-wheel python3 -c "import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))" 2>/dev/null |
    tail -1
}

configure() {
  local nccl_root note=""
  nccl_root=$(nccl_wheel_root)
  local nccl_args=()
  if [ -n "$nccl_root" ] && [ -d "$nccl_root" ]; then
    nccl_args=(-DPB_NCCL_ROOT="$nccl_root")
    note="NCCL hint $nccl_root"
  fi
  deps_cmake_args "$prefix"
  run_step configure 600 "$note" cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPB_BUILD_BENCH=OFF \
    "${DEPS_CMAKE_ARGS[@]}" -DMPIEXEC_EXECUTABLE="$mpiexec" "${nccl_args[@]}"
  grep -h "parabench:" "$out/logs/configure.log" >"$out/configure-summary.txt" 2>/dev/null || true
}

# The gpu-labelled test binaries (suites/unit/CMakeLists.txt: gpu.cuda_kernels).
build_targets() {
  run_step build "${PB_BUILD_TIMEOUT:-420}" "" cmake --build "$build" -j "$(nproc)" --target parabench test_cuda_kernels
}

# The environments tried for MPICH, in order (one line each, VAR=value words): Debian's
# MPICH is built for UCX (ch4:ucx); in a container without InfiniBand UCX needs its
# shared-memory and TCP transports named. Then the ch4:ofi netmod over TCP or sockets.
mpi_environments() {
  cat <<'EOF'
UCX_TLS=self,sm,tcp
UCX_TLS=self,tcp UCX_POSIX_USE_PROC_LINK=n
MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=tcp
MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=sockets
UCX_TLS=tcp MPIR_CVAR_NOLOCAL=1
EOF
}

# mpi-preflight: per environment, `mpiexec -n 2 parabench list` (the launcher starts two
# ranks) and a one-message all-reduce (MPI_Init and a transport; `list` does not initialize
# MPI). The first that passes both is exported for the MPI steps and written to mpi-env.txt.
mpi_preflight() {
  local t0 env_line i=0 limit=${PB_PREFLIGHT_TIMEOUT:-20} log=$out/logs/mpi-preflight.log
  t0=$(date +%s)
  : >"$log"
  mpi_env=""
  while read -r env_line; do
    i=$((i + 1))
    echo "--- try $i: $env_line" >>"$log"
    # shellcheck disable=SC2086  # env_line is VAR=value words
    if invoke "mpi-preflight-$i" timeout -k 5 "$limit" env $env_line "$mpiexec" -n 2 "$build/bin/parabench" list \
      >>"$log" 2>&1 &&
      invoke "mpi-preflight-$i" timeout -k 5 "$limit" env $env_line "$mpiexec" -n 2 "$build/bin/parabench" \
        collectives -b 8 -e 8 -w 0 -n 1 --ops all_reduce >>"$log" 2>&1; then
      mpi_env=$env_line
      break
    fi
    echo "--- try $i failed (rc $?)" >>"$log"
  done < <(mpi_environments)
  if [ -n "$mpi_env" ]; then
    echo "$mpi_env" >"$out/mpi-env.txt"
    record mpi-preflight 0 "$(($(date +%s) - t0))" "$mpi_env"
  else
    echo "none of the environments ran mpiexec -n 2" >"$out/mpi-env.txt"
    record mpi-preflight 1 "$(($(date +%s) - t0))" "no environment ran mpiexec -n 2 (see logs/mpi-preflight.log)"
    failed=1
  fi
}

gpu_tests() {
  # shellcheck disable=SC2016  # expanded by the inner sh
  run_step gpu-tests "${PB_TEST_TIMEOUT:-900}" "" sh -c 'cd "$1" && ctest -L gpu --output-on-failure' sh "$build"
}

# smoke NP [extra args]: the smoke suite on the CUDA backend with NP ranks, results straight
# into the output folder.
smoke() {
  local np=$1 base
  shift
  base=$out/results/gpu/$device-$stamp-np$np
  # shellcheck disable=SC2086  # mpi_env is VAR=value words
  run_step "smoke-np$np" "${PB_SMOKE_TIMEOUT:-900}" "$mpi_env" \
    env $mpi_env "$mpiexec" -n "$np" "$build/bin/parabench" run --suite smoke --backend cuda "$@" \
    --out "$base.json" --md "$base.md"
}

# ---- the run ------------------------------------------------------------------------------

lib=$prefix/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export HYDRA_LAUNCHER=fork  # one node: no ssh
mpiexec=${PB_MPIEXEC:-$prefix/usr/bin/mpiexec.hydra}
stamp=$(date -u +%Y%m%d)
mpi_env=""

gpu_info
device=$(gpu_field 1 | tr ' ' '-')
device=${device:-gpu}
compute_mode=$(gpu_field 4)
unpack_debs
configure
if ! build_targets; then  # nothing to run: the steps after it say so
  for s in mpi-preflight gpu-tests smoke-np1 smoke-np4; do skip_step "$s" "the build failed"; done
else
  mpi_preflight
  gpu_tests
  if [ -z "$mpi_env" ]; then
    for s in smoke-np1 smoke-np4; do skip_step "$s" "no MPI environment passed the preflight"; done
  else
    smoke 1 --skip-larger
    if [ "$compute_mode" = Default ]; then
      smoke 4
    else
      skip_step smoke-np4 "compute mode '${compute_mode:-unknown}': 4 ranks sharing one GPU need Default"
    fi
  fi
fi
rm -f "$out/now.txt"
echo "status: $out/status.md"
cat "$out/status.md"
exit "$failed"
