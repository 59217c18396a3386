#!/usr/bin/env bash
# The main job: bootstrap, then the smoke suite on 4 MPI ranks (CPU backend): every case
# checked against the reference, with the equivalence, throughput, memory and
# communication tables printed and written to results/latest/.
#   scripts/run.sh                      # smoke suite
#   PB_SUITE=ci PB_NP=4 scripts/run.sh  # another suite (smoke, ci, full, or a case file)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
build=${PB_BUILD_DIR:-build}
suite=${PB_SUITE:-smoke}
mkdir -p results/latest
name=$(basename "$suite" .json)
scripts/mpirun.sh "${PB_NP:-4}" "$build/bin/parabench" run --suite "$suite" \
  --out "results/latest/cpu-$name.json" --md "results/latest/cpu-$name.md" --csv "results/latest/cpu-$name.csv" "$@"
