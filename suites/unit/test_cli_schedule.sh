#!/usr/bin/env bash
# parabench schedule (no MPI, no model): every kind prints a timeline and a summary and
# writes an SVG and a Chrome trace that parses as JSON; bad input exits 2 with exactly one
# line, starting "parabench: error:", on stderr.
set -u
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")  # absolute: the runs below cd
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

for spec in "gpipe 4 1 8" "1f1b 4 1 8" "interleaved 4 2 8" "zb-h1 4 1 8" "1f1b 3 1 2" "interleaved 1 3 2" \
            "zb-v 4 2 8" "zb-v 3 2 2" "zb-v 1 2 3" "zb-h2 4 1 8" "dualpipev 4 2 8" "dualpipe 4 2 8" \
            "pipedream 4 1 8" "pipedream-2bw 4 1 8" "terapipe 4 1 8"; do
  set -- $spec
  kind=$1 p=$2 v=$3 m=$4
  stem="schedule-$kind-p$p-v$v-m$m"
  (cd "$work" && "$bin" schedule --kind "$kind" --pp "$p" --vpp "$v" --microbatches "$m") \
    > "$work/out" 2> "$work/err"
  rc=$?
  if [ "$rc" -ne 0 ]; then bad "$spec: exit $rc"; cat "$work/err"; continue; fi
  rows=$(grep -c '^rank [0-9]* |' "$work/out")
  [ "$rows" -eq "$p" ] && ok "$spec: $rows timeline rows" || bad "$spec: $rows timeline rows, expected $p"
  grep -q '^total time: ' "$work/out" && grep -q '^analytic bubble ' "$work/out" \
    && ok "$spec: summary" || { bad "$spec: summary"; cat "$work/out"; }
  if { [ "$kind" != zb-h1 ] && [ "$kind" != zb-v ]; } || [ "$m" -ge "$p" ]; then
    grep -q "every rank's idle fraction equals it" "$work/out" && ok "$spec: bubble equals the formula" \
      || { bad "$spec: bubble differs from the formula"; cat "$work/out"; }
  fi
  if [ "$kind" = zb-h1 ] || [ "$kind" = zb-v ]; then  # the memory: peak F-W per rank, as 1f1b's
    python3 - "$work/out" "$p" "$v" "$m" <<'PY' && ok "$spec: peak F-W per rank, 1f1b's" || { bad "$spec: peak F-W"; cat "$work/out"; }
import re, sys
out, p, v, m = open(sys.argv[1]).read(), *map(int, sys.argv[2:])
rows = re.findall(r"^ *(\d+) +\d+ +\d+ +\S+ = \S+ +\d+ +(\d+) +(\d+) +(\d+)$", out, re.M)
assert [int(r[0]) for r in rows] == list(range(p)), rows
held = max(int(r[3]) for r in rows)
assert all(int(r[3]) >= int(r[1]) for r in rows)
assert held == v * min(p, m), (held, v, p, m)
assert f"peak F-W {held} " in out and f"holds {held}: equal" in out
PY
  fi
  if [ "$kind" = zb-h2 ]; then  # no gap inside any rank's span; 2p-1 held on rank 0, more than 1f1b's p
    python3 - "$work/out" "$p" <<'PY' && ok "$spec: no gaps, peak F-W 2p-1" || { bad "$spec: zb-h2 table"; cat "$work/out"; }
import re, sys
out, p = open(sys.argv[1]).read(), int(sys.argv[2])
rows = re.findall(r"^ *(\d+) +\d+ +\d+ +\S+ = \S+ +(\d+) +(\d+) +(\d+) +(\d+)$", out, re.M)
assert [int(r[0]) for r in rows] == list(range(p)), rows
assert all(int(r[1]) == 0 for r in rows), rows
assert int(rows[0][4]) == 2 * p - 1 and f"holds {p}: more" in out, rows
PY
  fi
  if [ "$kind" = dualpipev ]; then  # idle p-1 per rank; 2p+1 chunks held, one more than 1f1b's 2p
    python3 - "$work/out" "$p" <<'PY' && ok "$spec: idle p-1, peak F-W 2p+1" || { bad "$spec: dualpipev table"; cat "$work/out"; }
import re, sys
out, p = open(sys.argv[1]).read(), int(sys.argv[2])
rows = re.findall(r"^ *(\d+) +\d+ +(\d+) +\S+ = \S+ +(\d+) +(\d+) +(\d+) +(\d+)$", out, re.M)
assert [int(r[0]) for r in rows] == list(range(p)), rows
assert all(int(r[1]) == p - 1 and int(r[5]) == 2 * p + 1 for r in rows), rows
assert f"holds {2 * p}: more" in out and "; dualpipev idle " in out, out
PY
  fi
  if [ "$kind" = zb-v ]; then  # both chunks labelled; zb-h1 and 1f1b on the same ranks for comparison
    grep -q '^rank 0 |F0a ' "$work/out" && grep -q ' F0b ' "$work/out" && grep -q 'stage 2p-1-r' "$work/out" \
      && grep -q '^same ranks and layers as one stage per rank (F=2 B=2 W=2): zb-h1 total ' "$work/out" \
      && ok "$spec: chunk labels and the zb-h1 / 1f1b line" || { bad "$spec: zb-v summary"; cat "$work/out"; }
  fi
  head -c 5 "$work/$stem.svg" 2>/dev/null | grep -q '<svg' && tail -n 1 "$work/$stem.svg" | grep -q '</svg>' \
    && ok "$spec: $stem.svg" || bad "$spec: no SVG $stem.svg"
  python3 - "$work/$stem.trace.json" "$p" <<'PY' && ok "$spec: trace parses" || bad "$spec: trace $stem.trace.json"
import json, sys
t = json.load(open(sys.argv[1]))
ev = [e for e in t["traceEvents"] if e["ph"] == "X"]
assert ev and {e["tid"] for e in ev} == set(range(int(sys.argv[2]))), "one thread per rank"
assert all(e["dur"] > 0 and e["name"][0] in "FBW" for e in ev)
PY
done

# Chimera at equal costs (the paper's F = B): every rank idles p-2, the formula's fraction.
"$bin" schedule --kind chimera --pp 4 --vpp 2 --microbatches 8 --costs 1,1 --no-files > "$work/out" 2> "$work/err" \
  && grep -q "analytic bubble (p-2)/(2m+p-2).* = 4/36 = 0.111 .*every rank's idle fraction equals it" "$work/out" \
  && ok "chimera at F = B: the paper's (p-2)/(2m+p-2)" || { bad "chimera bubble"; cat "$work/out" "$work/err"; }
# Named output files and explicit costs.
"$bin" schedule --kind zb-h1 --pp 3 --microbatches 5 --costs 2,3,1 --svg "$work/a.svg" --trace "$work/a.json" \
  > "$work/out" 2> "$work/err"
rc=$?
[ "$rc" -eq 0 ] && [ -s "$work/a.svg" ] && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$work/a.json" \
  && grep -q 'F=2 B=3 W=1' "$work/out" && ok "named files and --costs" || { bad "named files (exit $rc)"; cat "$work/err"; }
# With --no-files nothing is written.
(cd "$work" && mkdir quiet && cd quiet && "$bin" schedule --kind 1f1b --pp 2 -m 4 --no-files > /dev/null 2>&1 \
  && [ -z "$(ls -A)" ]) && ok "no files with --no-files" || bad "files written with --no-files"

check() {  # check "description" args...
  local what=$1; shift
  "$bin" schedule "$@" > "$work/out" 2> "$work/err"
  local rc=$? lines
  lines=$(wc -l < "$work/err")
  if [ "$rc" -ne 2 ] || [ "$lines" -ne 1 ] || ! grep -q '^parabench: error: ' "$work/err"; then
    echo "FAIL: $what: exit $rc, $lines stderr lines:"; cat "$work/err"; fail=1
  else
    echo "ok: $what: $(cat "$work/err")"
  fi
}
# The asynchronous kinds print each rank's weight versions (PipeDream: p-r; 2BW: 2, the last rank 1).
for spec in "pipedream:4 3 2 1" "pipedream-2bw:2 2 2 1"; do
  kind=${spec%%:*} want=${spec#*:}
  "$bin" schedule --kind "$kind" --pp 4 --microbatches 8 --no-files > "$work/out" 2>&1
  grep -q "weight versions held at most (current + stashed): $want (rank 0..3)" "$work/out" \
    && ok "$kind: weight versions $want" || { bad "$kind: weight versions"; cat "$work/out"; }
done

check "unknown kind"                 --kind pipedreamer --pp 4 --microbatches 8
check "2bw version below p-1"        --kind pipedream-2bw --pp 4 --microbatches 8 --update-every 2
check "2bw version not dividing m"   --kind pipedream-2bw --pp 4 --microbatches 8 --update-every 3
check "slices with gpipe"            --kind gpipe --pp 4 --microbatches 8 --slices 2
check "terapipe with v = 2"          --kind terapipe --pp 4 --vpp 2 --microbatches 8 --slices 2
check "update-every with 1f1b"       --kind 1f1b --pp 4 --microbatches 8 --update-every 4
check "interleaved m < p"            --kind interleaved --pp 4 --vpp 2 --microbatches 2
check "interleaved m not multiple"   --kind interleaved --pp 4 --vpp 2 --microbatches 6
check "interleaved v = 1"            --kind interleaved --pp 4 --microbatches 8
check "1f1b with v = 2"              --kind 1f1b --pp 4 --vpp 2 --microbatches 8
check "zb-v without --vpp 2"         --kind zb-v --pp 4 --microbatches 8
check "zb-v with v = 3"              --kind zb-v --pp 4 --vpp 3 --microbatches 8
check "zb-v without micro-batches"   --kind zb-v --pp 4 --vpp 2 --microbatches 0
check "zero ranks"                   --kind gpipe --pp 0 --microbatches 8
check "negative micro-batches"       --kind gpipe --pp 2 --microbatches -1
check "zero chunks"                  --kind gpipe --pp 2 --vpp 0 --microbatches 4
check "non-numeric p"                --kind gpipe --pp four --microbatches 4
check "missing --kind"               --pp 2 --microbatches 4
check "bad costs"                    --kind 1f1b --pp 2 --microbatches 4 --costs 1,x
check "zero cost"                    --kind 1f1b --pp 2 --microbatches 4 --costs 0,2
check "W cost without split"         --kind 1f1b --pp 2 --microbatches 4 --costs 1,2,1
check "unwritable SVG"               --kind 1f1b --pp 2 --microbatches 4 --svg "$work/no/such/dir/x.svg"
exit $fail
