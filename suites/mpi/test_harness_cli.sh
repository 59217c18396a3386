#!/usr/bin/env bash
# The parabench command: a suite run writes a complete results file; compare passes on
# it and detects an injected regression and an injected numerics failure; bad input and
# a failing rank end with a clear message and a non-zero exit, never a hang.
set -u
pb=$1; mpiexec=$2; flags=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
run() {  # run NP ARGS... ; output in $work/out, $work/err; status in $rc
  local np=$1; shift
  # shellcheck disable=SC2086
  timeout 120 "$mpiexec" -n "$np" $flags "$pb" "$@" > "$work/out" 2> "$work/err"
  rc=$?
}

cat > "$work/small.json" <<'JSON'
{"suite": "small",
 "models": {"m": {"hidden_size": 16, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 24,
                  "vocab_size": 32, "num_hidden_layers": 1}},
 "defaults": {"model": "m", "steps": 2, "train": {"micro_batch_size": 2, "seq_length": 8}},
 "cases": [{"name": "one"}, {"name": "tp2_sp", "layout": {"tp": 2}, "features": ["sp"]}, {"name": "dp2", "layout": {"dp": 2}}]}
JSON

# 1. A run: exit 0, results with every schema field, Markdown tables on stdout.
run 2 run --suite "$work/small.json" --out "$work/r.json" --md "$work/r.md"
[ "$rc" -eq 0 ] && ok "run exits 0" || { bad "run exit $rc"; cat "$work/err"; }
python3 - "$work/r.json" <<'PY' && ok "results schema complete" || bad "results schema"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["schema"] == "parabench.results/1"
for k in ["git_sha", "host", "cpu_model", "cores", "threads", "compiler", "mpi_library", "mpi_version", "cuda_version", "nccl_version"]:
    assert k in r["env"], k
assert isinstance(r["env"]["threads"], int) and r["env"]["threads"] >= 1, r["env"]["threads"]
assert len(r["cases"]) == 3
for c in r["cases"]:
    for k in ["name", "features", "layout", "backend", "dtype", "status", "checks", "throughput", "memory", "comm"]:
        assert k in c, (c["name"], k)
    assert set(c["layout"]) == {"dp", "tp", "pp", "vpp", "cp", "ep"}
    assert c["tp_grid"] == {"kind": "1d", "depth": 1}, c["tp_grid"]
    assert c["status"] == "pass", c["name"]
    for ch in c["checks"]:
        assert set(ch) >= {"tensor", "rel_err", "max_abs", "tol", "pass"}
    for k in ["step_ms_median", "step_ms_min", "step_ms_max", "tokens_per_s", "model_tflops", "mfu", "peak_tflops"]:
        assert k in c["throughput"], k
    for m in c["memory"]:
        assert set(m) >= {"rank", "category", "measured_bytes", "predicted_bytes"}
    for row in c["comm"]:
        assert set(row) >= {"group", "op", "phase", "bytes_per_call", "calls", "bytes", "bus_bytes", "predicted_calls",
                            "predicted_bytes", "predicted_bus_bytes"}
        assert row["bytes"] == row["calls"] * row["bytes_per_call"], row  # a row is one call size
tp = [c for c in r["cases"] if c["name"] == "tp2_sp"][0]
assert any(row["op"] == "reduce_scatter" for row in tp["comm"])
# dp2: the gradient buffer and the 8-byte loss are two all-reduce rows of the optimizer phase
dp = [c for c in r["cases"] if c["name"] == "dp2"][0]
sizes = sorted(row["bytes_per_call"] for row in dp["comm"] if (row["group"], row["op"], row["phase"]) == ("dp", "all_reduce", "optimizer"))
assert len(sizes) == 2 and sizes[0] == 8 and sizes[1] > 8, sizes
PY
grep -q "^## Communication" "$work/out" && grep -q "^## Memory" "$work/r.md" && ok "markdown tables" || bad "markdown tables"
# The overlap of every case: per rank the communication time, the exposed part and the
# hidden fraction, and the ranks' timeline of the last step as a Chrome trace next to the
# results (r.timelines/CASE.json), named in the results.
python3 - "$work/r.json" <<'PY' && ok "overlap and timelines next to the results" || bad "overlap / timelines"
import json, os, sys
path = sys.argv[1]
r = json.load(open(path))
for c in r["cases"]:
    o = c["overlap"]
    assert len(o["ranks"]) == (2 if c["name"] != "one" else 1), c["name"]
    assert 0 <= o["hidden_fraction"] <= 1 and o["exposed_ms"] <= o["comm_ms"] + 1e-9, o
    if c["name"] != "one":
        assert o["comm_ms"] > 0 and o["hidden_fraction"] == 0, (c["name"], o)  # blocking collectives only
    assert "trace" not in o and o["trace_file"] == "r.timelines/" + c["name"] + ".json", o
    t = json.load(open(os.path.join(os.path.dirname(path), o["trace_file"])))
    ev = t["traceEvents"]
    assert ev and all(e["ph"] == "X" and e["dur"] >= 0 for e in ev)
    assert {e["pid"] for e in ev} == set(range(len(o["ranks"])))
    assert any(e["cat"] == "compute" and e["name"].endswith(" forward") for e in ev)  # "attention 0 forward"
PY
grep -q "^## Communication overlap" "$work/r.md" && ok "overlap table" || bad "overlap table"

# 2. compare: identical passes; injected regressions fail.
"$pb" compare "$work/r.json" "$work/r.json" > /dev/null && ok "compare identical" || bad "compare identical"
python3 - "$work/r.json" "$work" <<'PY'
import json, sys, copy
r = json.load(open(sys.argv[1])); w = sys.argv[2]
slow = copy.deepcopy(r); slow["cases"][0]["throughput"]["step_ms_median"] *= 3
json.dump(slow, open(w + "/slow.json", "w"))
num = copy.deepcopy(r); num["cases"][1]["checks"][2]["rel_err"] = 1.0; num["cases"][1]["checks"][2]["pass"] = False
num["cases"][1]["status"] = "fail"
json.dump(num, open(w + "/numerics.json", "w"))
comm = copy.deepcopy(r); comm["cases"][1]["comm"][0]["bytes"] += 4
json.dump(comm, open(w + "/comm.json", "w"))
fast = copy.deepcopy(r)
for c in fast["cases"]: c["throughput"]["step_ms_median"] /= 2
json.dump(fast, open(w + "/fast.json", "w"))
mem = copy.deepcopy(r); mem["cases"][1]["memory"][0]["measured_bytes"] *= 2
json.dump(mem, open(w + "/mem.json", "w"))
# the row layout before rows were one call size: one row per (group, op, phase), no per-call fields
old = copy.deepcopy(r)
for c in old["cases"]:
    rows = {}
    for row in c["comm"]:
        o = rows.setdefault((row["group"], row["op"], row["phase"]), {"group": row["group"], "op": row["op"], "phase": row["phase"], "calls": 0, "bytes": 0})
        o["calls"] += row["calls"]; o["bytes"] += row["bytes"]
    c["comm"] = list(rows.values())
json.dump(old, open(w + "/old.json", "w"))
PY
"$pb" compare "$work/r.json" "$work/slow.json" > /dev/null 2>&1; [ $? -eq 1 ] && ok "compare detects a 3x step time" || bad "timing regression missed"
"$pb" compare --no-timing "$work/r.json" "$work/slow.json" > /dev/null 2>&1 && ok "--no-timing ignores it" || bad "--no-timing"
"$pb" compare --no-timing "$work/r.json" "$work/numerics.json" > /dev/null 2>&1; [ $? -eq 1 ] && ok "compare detects a numerics failure" || bad "numerics failure missed"
"$pb" compare --no-timing "$work/r.json" "$work/comm.json" > /dev/null 2>&1; [ $? -eq 1 ] && ok "compare detects 4 more comm bytes" || bad "comm change missed"
"$pb" compare "$work/r.json" "$work/fast.json" > /dev/null 2> "$work/err"; rc=$?
[ "$rc" -eq 0 ] && grep -q "^warning: .*faster, refresh the baseline" "$work/err" \
  && ok "compare: a step twice as fast warns (refresh the baseline) and exits 0" || bad "faster step: exit $rc"
"$pb" compare --no-timing "$work/r.json" "$work/mem.json" > /dev/null 2>&1; [ $? -eq 1 ] \
  && ok "compare: a memory peak doubled exits 1" || bad "memory growth missed"
"$pb" compare "$work/r.json" "$work/nothing.json" > /dev/null 2>&1; [ $? -eq 2 ] \
  && ok "compare: a missing file exits 2" || bad "compare input error exit code"
"$pb" report "$work/r.json" | grep -q "^## Equivalence" && ok "report" || bad "report"
"$pb" compare --no-timing "$work/old.json" "$work/r.json" > /dev/null 2>&1 && ok "compare reads a baseline of the old row layout" \
  || bad "old row layout"

# 3. Bad input: non-zero exit, the reason in one line, no hang.
expect_error() {  # what np needle args...
  local what=$1 np=$2 needle=$3; shift 3
  run "$np" "$@"
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q -- "$needle" "$work/err"; then ok "$what: exit $rc: $(grep -m1 -- "$needle" "$work/err")"
  else bad "$what: exit $rc"; cat "$work/err"; fi
}
printf '{"cases": [' > "$work/malformed.json"
expect_error "malformed case file" 2 "malformed JSON" run --suite "$work/malformed.json"
sed 's/"features": \["sp"\]/"features": ["warp_drive"]/' "$work/small.json" > "$work/unknown.json"
expect_error "unknown technique" 2 "unknown feature 'warp_drive'" run --suite "$work/unknown.json"
sed 's/"layout": {"tp": 2}/"layout": {"tp": 3}/' "$work/small.json" > "$work/layout.json"
expect_error "impossible layout" 2 "tp 3 does not divide" run --suite "$work/layout.json"
sed 's/"layout": {"dp": 2}/"layout": {"dp": 4}/' "$work/small.json" > "$work/ranks.json"
expect_error "more ranks than started" 2 "needs 4 ranks, only 2 started" run --suite "$work/ranks.json"
run 2 run --suite "$work/ranks.json" --skip-larger
[ "$rc" -eq 0 ] && grep -q "SKIP (needs 4 ranks, 2 started)" "$work/err" && ok "--skip-larger skips it" || bad "--skip-larger: $rc"
sed 's/"name": "one"}/"name": "one", "colour": "red"}/' "$work/small.json" > "$work/key.json"
expect_error "unknown key" 2 "unknown key 'colour'" run --suite "$work/key.json"
# MoE: an EP degree that does not divide the experts, and a capacity factor <= 0: one line
# (from rank 0 only), exit 2.
sed 's/"num_hidden_layers": 1}}/"num_hidden_layers": 1, "num_local_experts": 3, "num_experts_per_tok": 2}}/; s/"layout": {"dp": 2}/"layout": {"dp": 2, "ep": 2}/' \
  "$work/small.json" > "$work/moe_ep.json"
expect_error "MoE: EP not dividing E" 2 "ep 2 does not divide num_local_experts 3" run --suite "$work/moe_ep.json"
[ "$(grep -c "ep 2 does not divide" "$work/err")" -eq 1 ] && ok "MoE: the error is printed once" || bad "MoE error count"
sed 's/"num_hidden_layers": 1}}/"num_hidden_layers": 1, "num_local_experts": 4, "moe_expert_capacity_factor": 0}}/' \
  "$work/small.json" > "$work/moe_cf.json"
expect_error "MoE: capacity factor 0" 2 "moe_expert_capacity_factor must be > 0, got 0" run --suite "$work/moe_cf.json"
# The distributed optimizer on one rank runs and says so once.
sed 's/"cases": \[{"name": "one"}/"cases": [{"name": "one", "features": ["distributed_optimizer"]}/' "$work/small.json" > "$work/zero1.json"
run 2 run --suite "$work/zero1.json"
[ "$rc" -eq 0 ] && [ "$(grep -c "nothing to shard" "$work/err")" -eq 1 ] && ok "distributed_optimizer with dp 1: runs, said once" \
  || { bad "distributed_optimizer with dp 1: exit $rc"; cat "$work/err"; }
# ZeRO: an unknown stage, a stage without the distributed optimizer, and recompute of more
# layers than a stage holds: one line each.
sed 's/"cases": \[{"name": "one"}/"cases": [{"name": "one", "features": ["distributed_optimizer"], "zero_stage": 4}/' "$work/small.json" > "$work/zero4.json"
expect_error "ZeRO: unknown stage" 2 "unknown zero_stage 4 (1, 2, 3)" run --suite "$work/zero4.json"
[ "$(grep -c "unknown zero_stage" "$work/err")" -eq 1 ] && ok "ZeRO: the error is printed once" || bad "ZeRO error count"
sed 's/"cases": \[{"name": "one"}/"cases": [{"name": "one", "zero_stage": 2}/' "$work/small.json" > "$work/zero_nofeature.json"
expect_error "ZeRO: stage without the feature" 2 "zero_stage needs the feature distributed_optimizer" run --suite "$work/zero_nofeature.json"
sed 's/"cases": \[{"name": "one"}/"cases": [{"name": "one", "features": ["recompute_full"], "recompute_num_layers": 2}/' "$work/small.json" > "$work/recompute.json"
expect_error "recompute: more layers than a stage" 2 "recompute_num_layers 2 is more than the 1 layers a pipeline stage holds" run --suite "$work/recompute.json"
expect_error "unknown suite" 2 "no suite or case file" run --suite no_such_suite
expect_error "unknown subcommand option" 1 "parabench: error:" run --suite smoke --bogus
expect_error "compare of a non-results file" 1 "parabench: error:" compare "$work/small.json" "$work/r.json"

# 4. list, and analyze: the predicted communication of tp2_sp equals what the run measured.
"$pb" list > "$work/list" && grep -q "smoke: " "$work/list" && grep -q "dp2_tp2_sp" "$work/list" && grep -q "^  sp " "$work/list" \
  && ok "list" || bad "list"
cat > "$work/m.json" <<'JSON'
{"hidden_size": 16, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 24, "vocab_size": 32, "num_hidden_layers": 1}
JSON
"$pb" analyze --model "$work/m.json" --layout tp2 --features sp --micro-batch 2 --seq 8 --micro-batches 1 --steps 2 > "$work/analyze" \
  || bad "analyze exit"
python3 - "$work/analyze" "$work/r.json" <<'PY' && ok "analyze equals the measured tp2_sp communication, per call size" || bad "analyze vs run"
import json, sys
rows = {}
for line in open(sys.argv[1]):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 9 and cells[0] in ("tp", "mp", "dp"):
        rows[(cells[0], cells[1], cells[2], int(cells[3]))] = (int(cells[4]), int(cells[5]), float(cells[7]))
case = [c for c in json.load(open(sys.argv[2]))["cases"] if c["name"] == "tp2_sp"][0]
measured = {(r["group"], r["op"], r["phase"], r["bytes_per_call"]): (r["calls"], r["bytes"], r["bus_bytes"]) for r in case["comm"]}
assert rows and rows.keys() == measured.keys(), (rows, measured)
for k in rows:
    assert rows[k][:2] == measured[k][:2] and abs(rows[k][2] - measured[k][2]) < 0.5, (k, rows[k], measured[k])
PY
# analyze --compare-tp: tp 4 as 1d, 1d + sp, 2d (its parameters as analyze --tp-kind 2d says) and 3d refused.
"$pb" analyze --model "$work/m.json" --layout tp4 --micro-batch 2 --seq 8 --compare-tp > "$work/compare_tp" \
  || bad "analyze --compare-tp exit"
"$pb" analyze --model "$work/m.json" --layout tp4 --tp-kind 2d --micro-batch 2 --seq 8 > "$work/analyze2d" \
  || bad "analyze --tp-kind 2d exit"
python3 - "$work/compare_tp" "$work/analyze2d" <<'PY' && ok "analyze --compare-tp: the arrangements side by side" || bad "analyze --compare-tp"
import sys
table = {}
for line in open(sys.argv[1]):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 5:
        table[cells[0]] = cells[1:]
assert table[""] == ["1d", "1d + sp", "2d", "3d"], table[""]
assert table["parameters (elements)"][3] == "—", table
text = open(sys.argv[1]).read()
assert "3d: case analyze: tp_kind 3d arranges the tp ranks as q x q x q: tp must be a cube, got tp 4" in text, text
line = [l for l in open(sys.argv[2]) if l.startswith("parameters:")][0]
assert line.split()[3] == table["parameters (elements)"][2], (line, table)
PY
"$pb" analyze --model "$work/m.json" --layout tp2 --features sp --micro-batch 2 --seq 8 --dtype bf16 > "$work/analyze16" \
  || bad "analyze --dtype bf16 exit"
python3 - "$work/analyze" "$work/analyze16" <<'PY' && ok "analyze --dtype bf16 halves the activation transfers" || bad "analyze --dtype bf16"
import sys
def rows(path):
    out = {}
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0] == "tp" and cells[1] == "reduce_scatter":
            out[cells[2]] = int(cells[3])
    return out
fp32, bf16 = rows(sys.argv[1]), rows(sys.argv[2])
assert fp32 and fp32.keys() == bf16.keys() and all(fp32[k] == 2 * bf16[k] for k in fp32), (fp32, bf16)
PY
"$pb" analyze --model "$work/m.json" --layout tp2 --dtype fp16 > "$work/out" 2> "$work/err"; rc=$?
[ "$rc" -eq 2 ] && [ "$(wc -l < "$work/err")" -eq 1 ] && grep -q "unknown dtype 'fp16'" "$work/err" && ok "analyze rejects --dtype fp16: $(cat "$work/err")" \
  || { bad "analyze --dtype fp16: $rc"; cat "$work/err"; }
# The split of the layers over pipeline stages: the partitioner's, next to the even one.
"$pb" analyze --model fam8 --layout pp4 --schedule 1f1b --micro-batch 1 --seq 64 --micro-batches 8 \
  --pp-layers balanced > "$work/out" 2> "$work/err" \
  && grep -q '^chosen split, layers per stage: 3, 2, 2, 1 ' "$work/out" && grep -q '^even split, layers per stage: 2, 2, 2, 2 ' "$work/out" \
  && ok "analyze --pp-layers balanced: 3, 2, 2, 1 against the even split" || { bad "analyze split"; cat "$work/out" "$work/err"; }
"$pb" analyze --model fam8 --layout pp4 --pp-layers 2,2,2 > "$work/out" 2> "$work/err"; rc=$?
[ "$rc" -eq 2 ] && [ "$(wc -l < "$work/err")" -eq 1 ] && grep -q "3 stage(s) given (2, 2, 2) for 4 pipeline stages" "$work/err" \
  && ok "analyze rejects a split that does not cover the stages" || { bad "analyze bad split: $rc"; cat "$work/err"; }
run 1 analyze --model "$work/m.json" --layout tp3
[ "$rc" -eq 2 ] && grep -q "tp 3 does not divide" "$work/err" && ok "analyze rejects tp3" || bad "analyze tp3: $rc"
run 1 analyze --model "$work/m.json" --layout xy2
[ "$rc" -eq 2 ] && grep -q "unknown degree 'xy'" "$work/err" && ok "analyze rejects xy2" || bad "analyze xy2: $rc"

# 5. A case that runs past --timeout is aborted with a message instead of hanging.
start=$(date +%s)
expect_error "timeout" 2 "timeout: case one ran longer than --timeout" run --suite "$work/small.json" --timeout 1 --inject-delay 30
[ $(( $(date +%s) - start )) -lt 25 ] && ok "the timeout fired long before the 30 s hang ended" || bad "timeout too late"

# 6. --backend cuda: runs where a GPU is visible; elsewhere one clear line and a non-zero exit.
run 1 run --suite "$work/small.json" --backend cuda
if [ "$rc" -eq 0 ]; then ok "backend cuda ran (a GPU is visible)"
elif grep -q -E "backend cuda: (no CUDA device is visible|this build has no CUDA backend)" "$work/err"; then
  ok "backend cuda without a GPU: exit $rc: $(grep -m1 -E "backend cuda:" "$work/err")"
else bad "backend cuda: exit $rc"; cat "$work/err"; fi

# 7. An exception on one rank aborts the job with that rank's message.
expect_error "failing rank" 2 "\[rank 1/2 .*injected failure" run --suite "$work/small.json" --inject-failure 1

# 8. Results are never lost or half-written (reference/io/atomic_file.h).
#    An unwritable output path is refused before the first case: one line, exit 2.
run 2 run --suite "$work/small.json" --out "$work/missing/r.json"
if [ "$rc" -eq 2 ] && [ "$(grep -c 'cannot write .*missing/r.json: No such file or directory' "$work/err")" -eq 1 ] \
   && ! grep -q '^\[1/' "$work/err"; then ok "unwritable --out refused before the first case: $(head -1 "$work/err")"
else bad "unwritable --out: exit $rc"; cat "$work/err"; fi
#    A full device: one line, a non-zero exit, never "results in".
run 2 run --suite "$work/small.json" --out /dev/full
if [ "$rc" -ne 0 ] && grep -q "cannot write /dev/full: No space left on device" "$work/err" \
   && ! grep -q "results in" "$work/err"; then ok "--out /dev/full: exit $rc: $(grep -m1 -o 'cannot write /dev/full.*' "$work/err")"
else bad "--out /dev/full: exit $rc"; cat "$work/err"; fi
run 1 run --suite "$work/small.json" --md /dev/full
if [ "$rc" -ne 0 ] && grep -q "cannot write /dev/full" "$work/err"; then ok "--md /dev/full: exit $rc"
else bad "--md /dev/full: exit $rc"; cat "$work/err"; fi
#    A small tmpfs that fills up (where this test may mount one): what is left is either
#    nothing or the last complete save (valid JSON), never a truncated file or a temporary.
if mkdir -p "$work/tiny" && mount -t tmpfs -o size=12k tmpfs "$work/tiny" 2> /dev/null; then
  run 2 run --suite "$work/small.json" --out "$work/tiny/r.json"
  left=$(ls -A "$work/tiny" | grep -v '^r.timelines$' | tr '\n' ' ' | sed 's/ $//')
  valid=yes
  # the results and the timelines written next to them (r.timelines/CASE.json): complete or absent
  for f in "$work/tiny/r.json" "$work/tiny"/r.timelines/*; do
    [ -e "$f" ] && ! python3 -c "import json, sys; json.load(open(sys.argv[1]))" "$f" && valid=no
  done
  umount "$work/tiny"
  if [ "$rc" -ne 0 ] && grep -q "No space left on device" "$work/err" && [ "$valid" = yes ] \
     && { [ -z "$left" ] || [ "$left" = r.json ]; }; then
    ok "full 12 KiB tmpfs: exit $rc, left: ${left:-nothing} (valid)"
  else bad "full tmpfs: exit $rc, left: $left, valid: $valid"; cat "$work/err"; fi
else ok "full tmpfs: not mountable here (skipped; /dev/full covered above)"; fi
#    Each case is saved as it ends: a rank failing in case 2 keeps case 1, marked incomplete.
rm -f "$work/partial.json"
run 2 run --suite "$work/small.json" --out "$work/partial.json" --inject-failure 1
if [ "$rc" -ne 0 ] && python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
assert r['complete'] is False, r['complete']
assert [c['name'] for c in r['cases']] == ['one'] and r['cases'][0]['status'] == 'pass', r['cases']
" "$work/partial.json"; then ok "a failure in case 2 kept case 1's results (complete: false)"
else bad "per-case save: exit $rc"; cat "$work/err"; fi
# 9. Input is refused, never bent: integers must be integers in range, model keys known.
for edit in 's/"dp": 2}/"dp": 2.9}/|.dp.*must be an integer, got 2.9' \
            's/"dp": 2}/"dp": 4294967298}/|.dp.*is out of range (4294967298)' \
            's/"dp": 2}/"dp": true}/|.dp.*must be an integer, got true' \
            's/"steps": 2,/"steps": 2.7,/|.steps.*must be an integer, got 2.7' \
            's/"steps": 2,/"steps": 2, "seed": -1,/|.seed.*must be a non-negative integer, got -1' \
            's/"steps": 2,/"steps": 2, "seed": 1e30,/|.seed.*must be an integer' \
            's/"hidden_size": 16/"hiden_size": 16/|unknown key .hiden_size.'; do
  sed "${edit%%|*}" "$work/small.json" > "$work/bent.json"
  run 1 run --suite "$work/bent.json"
  if [ "$rc" -eq 2 ] && [ "$(grep -c 'parabench: error' "$work/err")" -eq 1 ] && grep -q -- "${edit#*|}" "$work/err"; then
    ok "refused: $(head -1 "$work/err")"
  else bad "not refused (${edit%%|*}): exit $rc"; cat "$work/err"; fi
done

#    Sizes: counts whose products overflow 64 bits, too many micro-batches, and memory
#    the node lacks are refused before anything is allocated (the case errs by name, one
#    line); analyze refuses instead of printing negative bytes.
for edit in 's/"hidden_size": 16/"hidden_size": 1000000000/|case one: sizes too large to count in 64 bits' \
            's/"seq_length": 8}/"seq_length": 1000000000000}/|case one: needs 3.5 PiB on this node (1 rank, the most 2.8 PiB: activations 1.8 PiB, workspace 989.5 TiB; the reference' \
            's/"seq_length": 8}/"seq_length": 10000000000000000}/|case one: sizes too large to count in 64 bits' \
            's/"vocab_size": 32/"vocab_size": 1000000000000/|case one: sizes too large to count in 64 bits' \
            's/"seq_length": 8}/"seq_length": 8, "num_micro_batches": 1000000000000}/|case one: num_micro_batches 1000000000000 is more than 1000000 per step' \
            's/"hidden_size": 16/"hidden_size": 1048576/|case one: needs 192.0 TiB on this node (1 rank, the most 48.0 TiB: params 12.0 TiB, grads 12.0 TiB, optimizer 24.0 TiB; the reference on rank 0 at least 144.0 TiB); this machine has'; do
  sed "${edit%%|*}" "$work/small.json" > "$work/big.json"
  run 1 run --suite "$work/big.json" --skip-larger --timeout 60
  if [ "$rc" -eq 1 ] && [ "$(grep -c -- "${edit#*|}" "$work/err")" -eq 1 ] && [ "$(grep -c 'ERROR' "$work/err")" -eq 1 ]; then
    ok "refused: $(grep -m1 -- "${edit#*|}" "$work/err" | sed 's/^ *//')"
  else bad "size not refused (${edit%%|*}): exit $rc"; cat "$work/err"; fi
done
python3 -c "import json,sys; json.dump(json.load(open(sys.argv[1]))['models']['m'], open(sys.argv[2], 'w'))" \
  "$work/small.json" "$work/m.json"
"$pb" analyze --model "$work/m.json" --seq 1000000000000 --micro-batch 1000000000 > "$work/out" 2> "$work/err"; rc=$?
[ "$rc" -eq 2 ] && [ "$(wc -l < "$work/err")" -eq 1 ] && grep -q "sizes too large to count in 64 bits" "$work/err" \
  && ! grep -q -- "-[0-9]" "$work/out" && ok "analyze refuses: $(cat "$work/err")" || { bad "analyze of 10^21 tokens: exit $rc"; cat "$work/out" "$work/err"; }

# 10. Command-line errors are said once (not once per rank), with exit 2.
for args in "--timeout -5|--timeout must be a positive number of seconds, got -5" \
            "--timeout 0|--timeout must be a positive number of seconds, got 0" \
            "--timeout nan|--timeout must be a positive number of seconds, got nan" \
            "--bogus|The following argument was not expected: --bogus"; do
  # shellcheck disable=SC2086
  run 2 run --suite "$work/small.json" ${args%%|*}
  if [ "$rc" -eq 2 ] && [ "$(grep -c 'parabench: error' "$work/err")" -eq 1 ] && grep -q -- "${args#*|}" "$work/err"; then
    ok "said once: $(grep -m1 'parabench: error' "$work/err")"
  else bad "${args%%|*}: exit $rc"; cat "$work/err"; fi
done
run 2 run --suite "$work"
[ "$rc" -eq 2 ] && [ "$(grep -c "parabench: error: $work is a directory" "$work/err")" -eq 1 ] \
  && ok "--suite DIR: $(head -1 "$work/err")" || { bad "--suite DIR: exit $rc"; cat "$work/err"; }
for sub in "report $work" "compare $work $work"; do
  # shellcheck disable=SC2086
  "$pb" $sub > /dev/null 2> "$work/err"; rc=$?
  [ "$rc" -eq 2 ] && grep -q "is a directory" "$work/err" && ok "${sub%% *} DIR: $(head -1 "$work/err")" \
    || { bad "${sub%% *} DIR: exit $rc"; cat "$work/err"; }
done

#    report refuses what compare refuses (one schema validation): a case file, schema /2,
#    checks that are no array; one line, exit 2, the same reason; an incomplete file is
#    reported with a line saying so.
python3 - "$work" "$work/r.json" <<'PY'
import json, sys
work, good = sys.argv[1], json.load(open(sys.argv[2]))
json.dump(dict(good, schema="parabench.results/2"), open(work + "/schema2.json", "w"))
c = json.loads(json.dumps(good)); c["cases"][0]["checks"] = "oops"; json.dump(c, open(work + "/oops.json", "w"))
json.dump(dict(good, complete=False), open(work + "/partial.json", "w"))
PY
for doc in "$work/small.json" "$work/schema2.json" "$work/oops.json"; do
  "$pb" report "$doc" > "$work/out" 2> "$work/err"; rc=$?
  "$pb" compare "$work/r.json" "$doc" > /dev/null 2> "$work/err2"; rc2=$?
  if [ "$rc" -eq 2 ] && [ "$rc2" -eq 2 ] && [ "$(wc -l < "$work/err")" -eq 1 ] && [ ! -s "$work/out" ] \
     && [ "$(sed 's/^parabench: error: results: //' "$work/err")" = "$(sed 's/^parabench: error: current: //' "$work/err2")" ]; then
    ok "report and compare refuse $(basename "$doc"): $(cat "$work/err")"
  else bad "report $(basename "$doc"): exit $rc / compare $rc2"; cat "$work/err" "$work/err2"; fi
done
"$pb" report "$work/partial.json" | grep -q '^\*\*incomplete\*\*' && ok "report says incomplete" \
  || bad "report of an incomplete file"

# 11. Checks that cannot be fooled: a diverging reference fails the case by name instead of
#     lending it a tolerance (lr 1e30 once made a 1.5e61 tolerance that passed anything).
sed 's/"seq_length": 8}/"seq_length": 8, "lr": 1e30}/; s/"steps": 2,/"steps": 3,/' "$work/small.json" > "$work/diverge.json"
run 1 run --suite "$work/diverge.json" --skip-larger --out "$work/diverge-out.json"
if [ "$rc" -eq 1 ] && grep -q "reference diverged at step" "$work/err" && python3 -c "
import json, sys
c = json.load(open(sys.argv[1]))['cases'][0]
assert c['status'] == 'fail' and c['error'].startswith('reference diverged at step'), c.get('error')
assert [ch['tensor'] for ch in c['checks'] if not ch['pass']] == ['reference'], c['checks']
" "$work/diverge-out.json"; then ok "lr 1e30: $(grep -m1 -o 'reference diverged at step [0-9]*' "$work/err"), the case fails"
else bad "lr 1e30: exit $rc"; cat "$work/err"; fi

#    Two jobs writing the same --out: the second is refused (one line, exit 2) while the
#    first runs; a lock whose process is gone is taken over.
rm -f "$work/shared.json" "$work/shared.json.lock"
# shellcheck disable=SC2086
timeout 120 "$mpiexec" -n 1 $flags "$pb" run --suite "$work/small.json" --skip-larger --out "$work/shared.json" --inject-delay 4 \
  > /dev/null 2>&1 &
first=$!
for _ in $(seq 50); do [ -e "$work/shared.json.lock" ] && break; sleep 0.1; done
run 1 run --suite "$work/small.json" --out "$work/shared.json"
if [ "$rc" -eq 2 ] && [ "$(grep -c 'is being written by another job' "$work/err")" -eq 1 ]; then
  ok "a second job on the same --out refused: $(head -1 "$work/err")"
else bad "second job on the same --out: exit $rc"; cat "$work/err"; fi
wait "$first" && [ ! -e "$work/shared.json.lock" ] && python3 -c "import json, sys; assert json.load(open(sys.argv[1]))['complete']" \
  "$work/shared.json" && ok "the first job finished, complete, its lock released" || bad "the first job's results or lock"
echo 2147483000 > "$work/shared.json.lock"  # no such process
run 1 run --suite "$work/small.json" --skip-larger --out "$work/shared.json" --timeout 100
[ "$rc" -eq 0 ] && ok "a stale lock is taken over" || { bad "stale lock: exit $rc"; cat "$work/err"; }

# 12. SIGINT / SIGTERM to the launcher (scripts/mpirun.sh, as scripts/run.sh uses it): one
#     line naming the interrupted case, exit 130 / 143, the finished case kept in a valid
#     file marked incomplete, no lock or temporary file left behind.
launcher=$(cd "$(dirname "$0")/../.." && pwd)/scripts/mpirun.sh
for sig in SIGINT SIGTERM; do
  python3 - "$launcher" "$pb" "$work" "$sig" <<'PY' && ok "$sig: $(cat "$work/sig.line")" || bad "$sig during a run"
import json, os, signal, subprocess, sys, time
launcher, pb, work, name = sys.argv[1:]
out = os.path.join(work, "sig.json")
for f in os.listdir(work):
    if f.startswith("sig.json") or f.startswith(".sig.json"):
        os.unlink(os.path.join(work, f))
job = subprocess.Popen([launcher, "2", pb, "run", "--suite", os.path.join(work, "small.json"), "--out", out,
                        "--md", os.path.join(work, "sig.md"), "--inject-delay", "3"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
deadline = time.time() + 90
while time.time() < deadline:  # until case 1 is saved: case 2 is running (3 s in its first step)
    try:
        if len(json.load(open(out))["cases"]) == 1:
            break
    except (OSError, ValueError):
        pass
    time.sleep(0.1)
time.sleep(0.5)
job.send_signal(getattr(signal, name))
_, err = job.communicate(timeout=60)
err = err.decode()
lines = [l for l in err.splitlines() if "interrupted" in l]
want = 130 if name == "SIGINT" else 143
assert job.returncode == want, (job.returncode, err)
assert len(lines) == 1 and lines[0].startswith("parabench: interrupted in case ") and \
    "in case 'tp2_sp' (2 of 3); the 1 finished case is saved in " + out in lines[0], err
doc = json.load(open(out))
assert doc["complete"] is False and [c["name"] for c in doc["cases"]] == ["one"], doc
left = sorted(f for f in os.listdir(work) if f.startswith("sig.json") or f.startswith(".sig"))
assert left == ["sig.json"], left  # no lock, no temporary file, no sig.md (never written)
open(os.path.join(work, "sig.line"), "w").write(lines[0])
PY
done
exit $fail
