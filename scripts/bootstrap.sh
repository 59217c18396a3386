#!/usr/bin/env bash
# Installs what is missing (Debian packages, non-interactive, idempotent), then configures
# and builds parabench in build/. Takes seconds when everything is already there.
#
#   scripts/bootstrap.sh            # Release build in build/
#   PB_BUILD_DIR=out PB_JOBS=8 scripts/bootstrap.sh
#   PB_CMAKE_ARGS="-DPB_ENABLE_CUDA=OFF" scripts/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${PB_BUILD_DIR:-build}
jobs=${PB_JOBS:-$(nproc)}
packages=(g++ cmake ninja-build pkg-config libeigen3-dev libopenmpi-dev openmpi-bin libgtest-dev libgmock-dev
          libbenchmark-dev nlohmann-json3-dev libcli11-dev python3-matplotlib chromium)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo > /dev/null; then sudo="sudo"; else
    echo "bootstrap: error: missing Debian packages (${missing[*]}) and not root; install them and rerun" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi

if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  # shellcheck disable=SC2086
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${PB_CMAKE_ARGS:-}
fi
cmake --build "$build_dir" -j "$jobs"
