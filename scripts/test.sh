#!/usr/bin/env bash
# Bootstraps (installs, configures, builds), runs every test with ctest, then gates the
# smoke suite against the committed CPU baseline (numerics and communication; step times
# are too noisy on CI to gate). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
build=${PB_BUILD_DIR:-build}
(cd "$build" && ctest --output-on-failure -j "${PB_JOBS:-$(nproc)}" "$@")
mkdir -p "$build/results"
scripts/mpirun.sh 4 "$build/bin/parabench" run --suite smoke --out "$build/results/cpu-smoke.json" > /dev/null
"$build/bin/parabench" compare --no-timing results/baselines/cpu-smoke.json "$build/results/cpu-smoke.json"
