#!/usr/bin/env bash
# On a development machine (it has Debian's archive): download the Debian packages the GPU
# machine lacks (it has nvcc, cmake, ninja, NCCL and PyTorch, but no MPI, no Eigen and no
# network) into .device/debs/, a git-ignored folder that the device call carries
# (`carry: [".device"]`). About 25 MB. libudev1: hwloc (MPICH's topology) needs it.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .device/debs
cd .device/debs
pkgs=(mpich libmpich12 libmpich-dev libhwloc15 libucx0 libfabric1 libnuma1 libudev1 libpsm2-2 libpsm-infinipath1 librdmacm1
      libibverbs1 libnl-3-200 libnl-route-3-200 libslurm38 libgfortran5 libquadmath0
      libeigen3-dev nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian)
apt-get download "${pkgs[@]}" 2>&1 | grep -v "^Get:" || true
find . -maxdepth 1 -name "*.deb" | wc -l | xargs echo "debs:"
du -sh .
