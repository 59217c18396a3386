#!/usr/bin/env bash
# A dump is complete and reloads exactly: training again from the dumped config.json and
# model.safetensors reproduces the same parameters after N steps, byte for byte.
set -eu
bin=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
model=(--hidden 24 --heads 3 --kv-heads 1 --ffn 20 --vocab 31 --layers 2 --experts 3 --topk 2 --moe-layers 1 --aux-coef 0.01)
train=(--seq 7 --micro-batch 2 --micro-batches 2 --steps 3 --seed 42)
"$bin" "${model[@]}" "${train[@]}" --dump "$work/a" > "$work/a.log"
for f in config.json model.safetensors grads_step1.safetensors final.safetensors batch_step1.safetensors; do
  [ -s "$work/a/$f" ] || { echo "FAIL: dump lacks $f"; exit 1; }
done
grep -q '"architectures"' "$work/a/config.json"
grep -q '"MixtralForCausalLM"' "$work/a/config.json"
grep -q 'model.layers.1.block_sparse_moe.experts.2.w3.weight' "$work/a/model.safetensors"
grep -q 'model.layers.0.mlp.gate_proj.weight' "$work/a/grads_step1.safetensors"
"$bin" --config "$work/a/config.json" --init "$work/a/model.safetensors" "${train[@]}" --dump "$work/b" > "$work/b.log"
for f in model.safetensors grads_step1.safetensors final.safetensors batch_step1.safetensors; do
  cmp "$work/a/$f" "$work/b/$f" || { echo "FAIL: $f differs after reload"; exit 1; }
done
# the per-step losses printed by both runs are identical
diff <(grep -E '^step +[0-9]' "$work/a.log" | awk '{print $4}') <(grep -E '^step +[0-9]' "$work/b.log" | awk '{print $4}')
echo "ok: dump complete, reload reproduces every file byte for byte"
# A dump onto a full disk (a 12 KiB tmpfs, where this test may mount one): one line, a
# non-zero exit, and no truncated or empty file left behind.
if mkdir -p "$work/tiny" && mount -t tmpfs -o size=12k tmpfs "$work/tiny" 2> /dev/null; then
  set +e
  "$bin" "${train[@]}" --dump "$work/tiny/d" > /dev/null 2> "$work/tiny.err"
  rc=$?
  set -e
  bad=$(find "$work/tiny" -type f \( -size 0 -o -name '.*.tmp.*' \) | wc -l)
  umount "$work/tiny"
  if [ "$rc" -ne 0 ] && grep -q "cannot write .*No space left on device" "$work/tiny.err" && [ "$bad" -eq 0 ]; then
    echo "ok: dump onto a full disk: exit $rc, $(grep -m1 -o 'cannot write.*' "$work/tiny.err")"
  else
    echo "FAIL: dump onto a full disk: exit $rc, $bad empty or temporary files"; cat "$work/tiny.err"; exit 1
  fi
else
  echo "ok: dump onto a full disk: no tmpfs here (skipped)"
fi
