#!/usr/bin/env bash
# Technique names are compared in one place only (DESIGN.md, "Features are typed"): every
# name `parabench list` prints (layout degrees, features, pipeline schedules) may appear in
# an == / != comparison only in the registry (optimized/train/registry.cc) and in the
# schedule generators (optimized/train/pp_schedule.cc). Fails naming each other place.
#   test_names_in_registry.sh PARABENCH SOURCE_DIR
set -euo pipefail
pb=$1 src=$2
names=$("$pb" list | awk '/^  [a-z0-9_-]+ +(yes|no) /{print $1}')
[ -n "$names" ] || { echo "FAIL: parabench list printed no technique"; exit 1; }
fail=0
for n in $names; do
  q=$(printf '%s' "$n" | sed 's/[.[\*^$]/\\&/g')
  hits=$(grep -rnE "(==|!=) *\"$q\"|\"$q\" *(==|!=)" "$src/harness" "$src/optimized" \
           --include='*.cc' --include='*.h' --include='*.cu' \
         | grep -v -e '/optimized/train/registry.cc:' -e '/optimized/train/pp_schedule.cc:' || true)
  if [ -n "$hits" ]; then echo "FAIL: '$n' compared outside the registry:"; echo "$hits"; fail=1; fi
done
count=$(echo "$names" | wc -w)
[ "$fail" -eq 0 ] && echo "ok: $count technique names, compared only in the registry and the schedule generators"
exit "$fail"
