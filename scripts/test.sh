#!/usr/bin/env bash
# Bootstraps (installs, configures, builds), then runs every test with ctest. Exits
# non-zero on any failure. GPU tests skip themselves on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cd "${PB_BUILD_DIR:-build}"
ctest --output-on-failure -j "${PB_JOBS:-$(nproc)}" "$@"
