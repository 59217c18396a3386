#!/usr/bin/env bash
# scripts/device/gpu-suite.sh's own logic without a GPU: every command goes through a stub
# (PB_GPU_SUITE_RUNNER) that fails the steps a scenario names. Checked: a failing step
# does not stop the later ones; each step's exit code and log land in $OUT as it ends; the
# exit code is non-zero iff a step failed; the MPI preflight takes the first environment
# that works; a compute mode other than Default skips the 4-rank run with a line; a step
# past its time limit is recorded as such; only parabench and test_cuda_kernels are built;
# the pip wheel's NCCL folder reaches cmake. Usage: test_gpu_suite.sh REPO_ROOT
set -uo pipefail
root=$1
suite=$root/scripts/device/gpu-suite.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/debs" "$tmp/nccl"
touch "$tmp/debs/fake.deb"
fails=0
fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}

# The stub: $1 is the step, the rest the command. Scenario knobs (environment):
#   STUB_FAIL   steps that exit 3 (space-separated; mpi-preflight-N for preflight try N)
#   STUB_MODE   the compute mode nvidia-smi reports
#   STUB_SLOW   a step that sleeps under its own `timeout` (to run past its limit)
cat >"$tmp/stub.sh" <<'STUB'
#!/usr/bin/env bash
step=$1
shift
echo "stub $step: $*"
echo "$step $*" >>"$STUB_CALLS"
for f in $STUB_FAIL; do [ "$f" = "$step" ] && exit 3; done
if [ "$step" = "${STUB_SLOW:-}" ]; then "$1" "$2" "$3" "$4" sleep 5; exit $?; fi
case $step in
  gpu-info) echo "NVIDIA H200, 570.86, 143771 MiB, ${STUB_MODE:-Default}" ;;
  nccl-wheel) echo "$STUB_NCCL" ;;
esac
exit 0
STUB
chmod +x "$tmp/stub.sh"

# run NAME [VAR=value...]: the suite with the stub, output in $tmp/NAME; sets rc.
run() {
  local name=$1
  shift
  mkdir -p "$tmp/$name"
  env OUT="$tmp/$name/out" PB_BUILD_DIR="$tmp/$name/build" PB_PREFIX="$tmp/$name/prefix" PB_DEBS_DIR="$tmp/debs" \
    PB_GPU_SUITE_RUNNER="$tmp/stub.sh" STUB_CALLS="$tmp/$name/calls" STUB_NCCL="$tmp/nccl" STUB_FAIL="" \
    "$@" bash "$suite" >"$tmp/$name/stdout" 2>&1
  rc=$?
}
# status NAME STEP: the recorded exit code of STEP ("" if not recorded).
status() { awk -F'\t' -v s="$2" '$1 == s { print $2 }' "$tmp/$1/out/status.tsv"; }

# 1. A failing GPU test run: the MPI steps still run, the failure is recorded, exit != 0.
run keep_going STUB_FAIL="gpu-tests mpi-preflight-1"
[ "$rc" -ne 0 ] || fail "keep_going: exit 0 with a failed step"
[ "$(status keep_going gpu-tests)" = 3 ] || fail "keep_going: gpu-tests rc '$(status keep_going gpu-tests)', want 3"
for s in gpu-info deps configure build mpi-preflight smoke-np1 smoke-np4; do
  [ "$(status keep_going "$s")" = 0 ] || fail "keep_going: $s rc '$(status keep_going "$s")', want 0"
done
grep -q "stub gpu-tests" "$tmp/keep_going/out/logs/gpu-tests.log" || fail "keep_going: no gpu-tests log in OUT"
grep -q "| gpu-tests | 3 |" "$tmp/keep_going/out/status.md" || fail "keep_going: status.md lacks gpu-tests"
[ "$(cat "$tmp/keep_going/out/mpi-env.txt")" = "UCX_TLS=self,tcp UCX_POSIX_USE_PROC_LINK=n" ] ||
  fail "keep_going: preflight chose '$(cat "$tmp/keep_going/out/mpi-env.txt")', want the second environment"
grep -q "^smoke-np4 .*UCX_TLS=self,tcp .* -n 4 .*--backend cuda.*--out $tmp/keep_going/out/results/gpu/NVIDIA-H200-[0-9]*-np4.json" \
  "$tmp/keep_going/calls" || fail "keep_going: smoke-np4 not run with the chosen environment into OUT"
grep -q "^build .*--target parabench test_cuda_kernels$" "$tmp/keep_going/calls" ||
  fail "keep_going: build is not exactly the parabench and test_cuda_kernels targets"
grep -q "^configure .*-DPB_NCCL_ROOT=$tmp/nccl" "$tmp/keep_going/calls" || fail "keep_going: no NCCL hint for cmake"
[ ! -e "$tmp/keep_going/out/now.txt" ] || fail "keep_going: now.txt left after a complete run"

# 2. Everything passes, compute mode Exclusive_Process: 4 ranks skipped with a line, exit 0.
run exclusive STUB_MODE=Exclusive_Process
[ "$rc" -eq 0 ] || fail "exclusive: exit $rc with no failed step"
[ "$(status exclusive smoke-np4)" = skip ] || fail "exclusive: smoke-np4 '$(status exclusive smoke-np4)', want skip"
grep -q "compute mode 'Exclusive_Process'" "$tmp/exclusive/out/status.tsv" || fail "exclusive: no compute-mode line"
[ "$(status exclusive smoke-np1)" = 0 ] || fail "exclusive: smoke-np1 did not run"
! grep -q "^smoke-np4" "$tmp/exclusive/calls" || fail "exclusive: smoke-np4 was run"

# 3. No MPI environment works: the smoke runs are skipped, not left to hang.
run no_mpi STUB_FAIL="mpi-preflight-1 mpi-preflight-2 mpi-preflight-3 mpi-preflight-4 mpi-preflight-5"
[ "$rc" -ne 0 ] || fail "no_mpi: exit 0"
[ "$(status no_mpi mpi-preflight)" = 1 ] || fail "no_mpi: mpi-preflight '$(status no_mpi mpi-preflight)', want 1"
[ "$(status no_mpi gpu-tests)" = 0 ] || fail "no_mpi: gpu-tests did not run"
[ "$(status no_mpi smoke-np1)" = skip ] || fail "no_mpi: smoke-np1 '$(status no_mpi smoke-np1)', want skip"

# 4. A failed build: nothing is run after it, each step says why.
run no_build STUB_FAIL=build
[ "$rc" -ne 0 ] || fail "no_build: exit 0"
[ "$(status no_build gpu-tests)" = skip ] || fail "no_build: gpu-tests '$(status no_build gpu-tests)', want skip"
! grep -q "^gpu-tests\|^smoke" "$tmp/no_build/calls" || fail "no_build: ran a step after the failed build"

# 5. A step past its time limit: killed by its timeout, recorded (124), the rest goes on.
run slow STUB_SLOW=smoke-np1 PB_SMOKE_TIMEOUT=1
[ "$(status slow smoke-np1)" = 124 ] || fail "slow: smoke-np1 '$(status slow smoke-np1)', want 124"
grep -q "ran past 1 s" "$tmp/slow/out/status.tsv" || fail "slow: no time-limit note"
[ "$(status slow smoke-np4)" = 0 ] || fail "slow: smoke-np4 did not run after the slow step"

# 6. The dry run prints the commands and runs none of them.
mkdir -p "$tmp/dry"
env OUT="$tmp/dry/out" PB_BUILD_DIR="$tmp/dry/build" PB_PREFIX="$tmp/dry/prefix" PB_DEBS_DIR="$tmp/debs" \
  PB_GPU_SUITE_DRY_RUN=1 bash "$suite" >"$tmp/dry/stdout" 2>&1
grep -q "dry run: timeout -k 10 [0-9]* cmake --build $tmp/dry/build .*--target parabench test_cuda_kernels" \
  "$tmp/dry/out/logs/build.log" || fail "dry: the build command is not printed"
[ ! -d "$tmp/dry/build" ] || fail "dry: the dry run configured a build"

if [ "$fails" -ne 0 ]; then
  echo "$fails check(s) failed; the last run's output:"
  cat "$tmp/dry/stdout"
  exit 1
fi
echo "gpu-suite.sh: all checks passed"
