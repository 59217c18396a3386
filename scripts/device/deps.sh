#!/usr/bin/env bash
# Sourced by gpu-suite.sh and bench-gpu.sh: what the carried Debian packages
# (scripts/device/fetch-debs.sh, unpacked into a prefix, never into /) give the build.
#   DEPS_UNPACK            an `sh -c` script: `sh -c "$DEPS_UNPACK" sh PREFIX DEB...` unpacks
#                          each package into PREFIX (a command, so the step runners can time it)
#   deps_cmake_args PREFIX sets the array DEPS_CMAKE_ARGS: CMake's search path into PREFIX and
#                          Debian's MPICH there (the C++ bindings skipped, libmpich by name)
# shellcheck disable=SC2016,SC2034,SC2089  # a script for `sh -c` (expanded, quoted by the inner sh), read by the sourcing scripts
DEPS_UNPACK='p=$1; shift; for d in "$@"; do dpkg -x "$d" "$p" || exit 1; done'

deps_cmake_args() {
  local p=$1 lib=$1/usr/lib/x86_64-linux-gnu
  # shellcheck disable=SC2034  # read by the scripts that source this one
  DEPS_CMAKE_ARGS=(-DCMAKE_PREFIX_PATH="$p/usr;$lib/cmake;$p/usr/share/eigen3/cmake;$p/usr/share/cmake"
    -DMPI_CXX_SKIP_MPICXX=ON -DMPI_CXX_HEADER_DIR="$p/usr/include/x86_64-linux-gnu/mpich"
    -DMPI_CXX_LIB_NAMES=mpich -DMPI_mpich_LIBRARY="$lib/libmpich.so")
}
