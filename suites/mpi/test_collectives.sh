#!/usr/bin/env bash
# `parabench collectives` on NP ranks (1, 2, 4): every op in float and bf16 over a small
# sweep reports #wrong = 0 and busbw = algbw x nccl-tests' factor (computed here from the
# op and N); an injected corruption makes #wrong non-zero and the exit code 1; bad input
# is one line and exit 2.
#   test_collectives.sh PARABENCH MPIEXEC "FLAGS" NP
set -u
pb=$1; mpiexec=$2; flags=${3:-}; np=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
run() {  # run ARGS... ; output in $work/out, $work/err; status in $rc
  # shellcheck disable=SC2086
  timeout 120 "$mpiexec" -n "$np" $flags "$pb" collectives "$@" > "$work/out" 2> "$work/err"
  rc=$?
}

for d in float bf16; do
  run -b 4 -e 64K -f 4 -w 1 -n 3 -d "$d" --json "$work/$d.json"
  if [ "$rc" -ne 0 ]; then bad "$d sweep exited $rc: $(head -3 "$work/err")"; continue; fi
  python3 - "$work/$d.json" "$np" "$d" <<'PY' && ok "$d: every op, #wrong 0, busbw = algbw x factor" || bad "$d rows"
import json, sys
r = json.load(open(sys.argv[1])); n = int(sys.argv[2]); d = sys.argv[3]
assert r["schema"] == "parabench-collectives-1" and r["ranks"] == n and r["dtype"] == d, r
factor = {"all_reduce": 2 * (n - 1) / n, "all_gather": (n - 1) / n, "reduce_scatter": (n - 1) / n,
          "all_to_all": (n - 1) / n, "broadcast": 1.0, "send_recv": 1.0}
seen = set()
for row in r["rows"]:
    seen.add(row["op"])
    assert row["wrong"] == 0, row
    assert row["time_us"] > 0 and row["size_bytes"] > 0, row
    assert abs(row["algbw_gbs"] - row["size_bytes"] / row["time_us"] / 1e3) <= 1e-9 * row["algbw_gbs"], row
    assert abs(row["busbw_gbs"] - row["algbw_gbs"] * factor[row["op"]]) <= 1e-9 * max(row["algbw_gbs"], 1e-30), row
    e = 2 if d == "bf16" else 4
    assert row["count"] * e == row["size_bytes"], row
    if row["op"] in ("all_gather", "reduce_scatter", "all_to_all"):
        assert row["count"] % n == 0, row
assert seen == set(factor), seen
PY
done

# An injected corruption: counted, and the exit code says so.
run -b 64 -e 1K -f 4 -w 0 -n 2 --inject-corruption --json "$work/bad.json"
if [ "$rc" -eq 1 ] && grep -q "ERROR" "$work/out" &&
   python3 -c "import json,sys; r=json.load(open(sys.argv[1])); assert all(x['wrong'] > 0 for x in r['rows'])" "$work/bad.json"; then
  ok "an injected corruption: #wrong > 0 in every row, exit 1"
else
  bad "injected corruption: exit $rc"
fi

# Bad input: one line, exit 2.
run -b 9X
if [ "$rc" -ne 0 ] && [ "$(grep -c 'parabench: error' "$work/err")" -eq 1 ] && grep -q "expected a byte count" "$work/err"; then
  ok "bad size: one line"
else
  bad "bad size: exit $rc, $(cat "$work/err")"
fi
run --ops all_reduce,nothing
if [ "$rc" -ne 0 ] && [ "$(grep -c 'parabench: error' "$work/err")" -eq 1 ]; then ok "unknown op: one line"; else bad "unknown op"; fi
exit $fail
