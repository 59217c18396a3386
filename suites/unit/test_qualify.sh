#!/usr/bin/env bash
# scripts/qualify.sh on the smoke matrix with 2 repeats finishes, writes both repeats, the
# summary (every case's statuses and step-time median, min, max and CV) and the report
# page, and ends with "qualification: PASS"; a suite with a failing case runs its other
# cases in every repeat and ends with "qualification: FAIL" and exit 1. Skips (77) without
# matplotlib (the report page; scripts/bootstrap.sh installs it).
#   test_qualify.sh PARABENCH SOURCE_DIR
set -u
pb=$1; src=$2
py=/usr/bin/python3; [ -x "$py" ] || py=python3
"$py" -c "import matplotlib" 2> /dev/null || { echo "SKIP: matplotlib is not installed (python3-matplotlib)"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

PB_PARABENCH=$pb "$src/scripts/qualify.sh" --suite smoke --repeats 2 --np 4 --out "$work/q" > "$work/out" 2> "$work/err"
rc=$?
[ "$rc" -eq 0 ] && tail -1 "$work/out" | grep -q "^qualification: PASS (24 cases run x 2 repeats" \
  && ok "smoke x 2: $(tail -1 "$work/out")" || bad "smoke x 2: exit $rc: $(tail -3 "$work/out" "$work/err")"
grep -q "eta [0-9]*s" "$work/err" && grep -q "qualify: repeat 2 of 2" "$work/err" && ok "progress with the time remaining" \
  || bad "progress"
"$py" - "$work/q" <<'PY' && ok "summary: every case, statuses of both repeats, median/min/max/CV; the report page" || bad "summary"
import json, os, sys
d = sys.argv[1]
s = json.load(open(d + "/summary.json"))
assert s["repeats"] == 2 and len(s["cases"]) == 24, (s["repeats"], len(s["cases"]))
for c in s["cases"]:
    assert c["statuses"] == ["pass", "pass"], c
    assert c["step_ms_min"] <= c["step_ms_median"] <= c["step_ms_max"] and c["cv"] >= 0, c
assert s["environment"]["world_size"] == 4
for f in ("run-1.json", "run-2.json", "report.html", "report.md", "summary.md"):
    assert os.path.getsize(os.path.join(d, f)) > 0, f
PY

# A failing case does not stop the others.
cat > "$work/bad.json" <<'JSON'
{"suite": "bad",
 "models": {"m": {"hidden_size": 16, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 24,
                  "vocab_size": 32, "num_hidden_layers": 1}},
 "defaults": {"model": "m", "steps": 2, "train": {"micro_batch_size": 2, "seq_length": 8}},
 "cases": [{"name": "broken", "layout": {"tp": 2}, "features": ["mc2"]}, {"name": "fine", "layout": {"dp": 2}}]}
JSON
PB_PARABENCH=$pb "$src/scripts/qualify.sh" --suite "$work/bad.json" --repeats 2 --np 2 --out "$work/b" > "$work/out" 2> "$work/err"
rc=$?
[ "$rc" -eq 1 ] && tail -1 "$work/out" | grep -q "^qualification: FAIL .*failed: broken" \
  && "$py" -c "import json,sys; s=json.load(open(sys.argv[1])); f=[c for c in s['cases'] if c['name']=='fine'][0]; assert f['statuses']==['pass','pass'], f" "$work/b/summary.json" \
  && ok "a failing case: the others run, FAIL, exit 1" || bad "failing case: exit $rc: $(tail -2 "$work/out")"
PB_PARABENCH=$pb "$src/scripts/qualify.sh" --repeats zero > /dev/null 2> "$work/err"; rc=$?
[ "$rc" -eq 2 ] && [ "$(wc -l < "$work/err")" -eq 1 ] && ok "bad argument: one line, exit 2" || bad "bad argument: $rc"
exit $fail
