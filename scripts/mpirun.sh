#!/usr/bin/env bash
# mpiexec with the flags this kind of machine needs: Open MPI refuses root without
# OMPI_ALLOW_RUN_AS_ROOT, and a 2-core machine needs --oversubscribe for 4 ranks.
#   scripts/mpirun.sh NP command args...
set -euo pipefail
np=$1; shift
flags=()
if mpiexec --version 2>/dev/null | grep -q "Open MPI\|OpenRTE"; then
  flags+=(--oversubscribe)
  if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
fi
exec mpiexec -n "$np" "${flags[@]}" "$@"
