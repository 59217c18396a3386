#!/usr/bin/env bash
# mpiexec with the flags this kind of machine needs: Open MPI refuses root without
# OMPI_ALLOW_RUN_AS_ROOT, and a 2-core machine needs --oversubscribe for 4 ranks.
#   scripts/mpirun.sh NP command args...
# Its exit status is the job's; on SIGINT / SIGTERM / SIGHUP it ends the job (mpiexec
# passes SIGTERM to every rank, where parabench says which case was interrupted) and exits
# 130 / 143 / 129, where mpiexec alone would exit 1.
set -uo pipefail
np=$1; shift
flags=()
if mpiexec --version 2>/dev/null | grep -q "Open MPI\|OpenRTE"; then
  flags+=(--oversubscribe)
  if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
fi
# In the background so that a signal reaches this script while the job runs (a foreground
# child would delay the trap until the job ended); stdin goes along explicitly.
mpiexec -n "$np" "${flags[@]}" "$@" <&0 &
job=$!
stop() {
  trap '' INT TERM HUP
  kill -TERM "$job" 2>/dev/null
  wait "$job"
  exit "$1"
}
trap 'stop 130' INT
trap 'stop 143' TERM
trap 'stop 129' HUP
wait "$job"
exit $?
