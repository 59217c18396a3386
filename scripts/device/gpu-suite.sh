#!/usr/bin/env bash
# Everything the GPU machine needs, in one command (run there from the repository root,
# with .device/ carried; see scripts/device/fetch-debs.sh):
#   1. unpack the carried Debian packages into a prefix (never into /),
#   2. configure and build with nvcc (sm_90) against that prefix and Debian's MPICH,
#   3. run the gpu-labelled tests,
#   4. run the smoke suite on the CUDA backend with 4 ranks sharing the GPU (collectives
#      through MPI, staged through host memory) and with 1 rank,
#   5. write results/gpu/<device>-<date>.{json,md} (and copies under $OUT when set).
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${PB_PREFIX:-/tmp/pb-deps}
build=${PB_BUILD_DIR:-build-gpu}
mkdir -p "$prefix"
for deb in .device/debs/*.deb; do dpkg -x "$deb" "$prefix"; done
lib=$prefix/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
mpiexec=$prefix/usr/bin/mpiexec.hydra
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPB_BUILD_BENCH=OFF \
  -DCMAKE_PREFIX_PATH="$prefix/usr;$lib/cmake;$prefix/usr/share/eigen3/cmake;$prefix/usr/share/cmake" \
  -DMPI_CXX_SKIP_MPICXX=ON -DMPI_CXX_HEADER_DIR="$prefix/usr/include/x86_64-linux-gnu/mpich" \
  -DMPI_CXX_LIB_NAMES=mpich -DMPI_mpich_LIBRARY="$lib/libmpich.so" -DMPIEXEC_EXECUTABLE="$mpiexec"
cmake --build "$build" -j "$(nproc)"

(cd "$build" && ctest -L gpu --output-on-failure) | tee "$build/gpu-tests.log"

device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' || echo gpu)
stamp=$(date -u +%Y%m%d)
mkdir -p results/gpu
status=0
"$mpiexec" -n 4 "$build/bin/parabench" run --suite smoke --backend cuda \
  --out "results/gpu/$device-$stamp-np4.json" --md "results/gpu/$device-$stamp-np4.md" || status=1
"$mpiexec" -n 1 "$build/bin/parabench" run --suite smoke --backend cuda --skip-larger \
  --out "results/gpu/$device-$stamp-np1.json" --md "results/gpu/$device-$stamp-np1.md" || status=1
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/results/gpu"
  cp results/gpu/"$device-$stamp"* "$OUT/results/gpu/"
  cp "$build/gpu-tests.log" "$OUT/"
fi
exit $status
