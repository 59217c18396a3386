#!/usr/bin/env bash
# Bad input to parabench-ref: each case must exit with status 2 and print exactly one
# line, starting "parabench-ref: error:", on stderr (no crash, no usage dump).
set -u
bin=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'not a safetensors file at all, just text' > "$work/corrupt.safetensors"
printf '\x08\x00\x00\x00\x00\x00\x00\x00{"a":1}' > "$work/badheader.safetensors"
printf '{"hidden_size": 64, "num_attention_heads": ' > "$work/truncated.json"
printf '{"hidden_size": 60, "num_attention_heads": 8, "intermediate_size": 32, "vocab_size": 50, "num_hidden_layers": 2}' > "$work/nodivide.json"
"$bin" --hidden 32 --heads 4 --kv-heads 2 --ffn 48 --vocab 40 --layers 1 --steps 0 --dump "$work/other" > /dev/null

fail=0
check() {  # check "description" args...
  local what=$1; shift
  "$bin" "$@" > "$work/out" 2> "$work/err"
  local rc=$? lines
  lines=$(wc -l < "$work/err")
  if [ "$rc" -ne 2 ] || [ "$lines" -ne 1 ] || ! grep -q '^parabench-ref: error: ' "$work/err"; then
    echo "FAIL: $what: exit $rc, $lines stderr lines:"; cat "$work/err"; fail=1
  else
    echo "ok: $what: $(cat "$work/err")"
  fi
}
check "H not divisible by A"       --hidden 250 --steps 1
check "A not divisible by G"       --heads 8 --kv-heads 3 --steps 1
check "odd head dim"               --hidden 24 --heads 8 --kv-heads 8 --steps 1
check "zero layers"                --layers 0
check "negative hidden"            --hidden -4
check "zero sequence"              --seq 0
check "negative micro-batch"       --micro-batch -2
check "top-k above experts"        --experts 2 --topk 3
check "MoE layer out of range"     --experts 2 --moe-layers 0,7
check "unknown option"             --bogus 3
check "non-numeric value"          --hidden lots
check "unknown dtype"              --dtype half
check "missing init file"          --init "$work/nope.safetensors"
check "corrupt init file"          --init "$work/corrupt.safetensors"
check "bad safetensors header"     --init "$work/badheader.safetensors"
check "init of another shape"      --init "$work/other/model.safetensors" --steps 1
check "missing config"             --config "$work/nope.json"
check "malformed config JSON"      --config "$work/truncated.json"
check "config that does not divide" --config "$work/nodivide.json"
check "config plus model flags"    --config "$work/other/config.json" --hidden 64
check "hidden size beyond int64"   --hidden 99999999999999999999
check "seed beyond uint64"         --seed 99999999999999999999999
# Sizes refused before anything is allocated: counts that overflow, memory the machine lacks.
check "hidden 10^9 overflows"       --hidden 1000000000 --steps 1
check "seq 10^12 overflows"         --seq 1000000000000 --steps 1
check "vocab 10^12 overflows"       --vocab 1000000000000 --steps 1
check "10^12 micro-batches"         --micro-batches 1000000000000 --steps 1
check "2^20 hidden needs 192 TiB"   --hidden 1048576 --steps 1
grep -q "needs at least 192.2 TiB (parameters, gradients and AdamW moments of 13208107614208 parameters" "$work/err" \
  && grep -q "; this machine has .* available$" "$work/err" || { echo "FAIL: the memory line: $(cat "$work/err")"; fail=1; }
# An init file whose weights hold a NaN: refused, not trained on.
python3 - "$work/other/model.safetensors" "$work/nan.safetensors" <<'PY'
import json, struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
name = next(k for k in header if k != "__metadata__")
assert header[name]["dtype"] == "F32", header[name]
start = 8 + n + header[name]["data_offsets"][0]
data[start:start + 4] = struct.pack("<f", float("nan"))
open(sys.argv[2], "wb").write(bytes(data))
PY
check "NaN in the init weights"    --config "$work/other/config.json" --init "$work/nan.safetensors" --steps 1
grep -q "non-finite" "$work/err" || { echo "FAIL: the NaN init error does not say non-finite"; fail=1; }
exit $fail
