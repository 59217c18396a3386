#!/usr/bin/env python3
"""Cross-check a parabench-ref dump against Hugging Face transformers.

Usage: python3 scripts/check_hf.py DIR [--tol T] [--stock]

DIR is written by `parabench-ref ... --dump DIR`. The script rebuilds the model
from DIR/config.json as LlamaForCausalLM (or MixtralForCausalLM when
num_local_experts > 0), loads the step-1 parameters (DIR/model.safetensors,
strict key match), runs the step-1 batch (DIR/batch_step1.safetensors) in
float64 and checks:
  * the mean cross-entropy against history[0]["ce"] of config.json;
  * every parameter gradient against DIR/grads_step1.safetensors
    (relative Frobenius error ||hf - ours|| / ||hf|| and max abs difference;
    ||hf|| is floored at 1e-6 of the global gradient norm).

Label convention: labels are NOT shifted. labels[b, s] is the target of
position s, so loss = mean over all B*S positions of CE(logits[b, s], labels[b, s]).
(We never pass labels= to the HF model, which would shift them.)
With m micro-batches (rows j*B..(j+1)*B-1 of the batch), the gradient is that
of the average of the m micro-batch losses.

Stock HF casts to float32 inside RMSNorm, RoPE, the attention softmax and the
Mixtral router softmax. Unless --stock is given, those modules are replaced by
the same math kept in the input dtype (float64), so a float64 dump can be
checked to ~1e-12. Mixtral's router then also honours norm_topk_prob.
Exit status: 0 all pass, 1 some check fails, 2 bad dump, 3 not expressible in HF.
"""
import argparse, json, struct, sys, types
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM
from transformers.models.llama import modeling_llama
from transformers.models.mixtral import modeling_mixtral

ST_DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}


def load_safetensors(path):
    try:
        from safetensors.torch import load_file
        return load_file(path)
    except ImportError:  # parse: u64 header length, JSON header, byte buffer
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header, buf = json.loads(f.read(n)), f.read()
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            t = torch.frombuffer(bytearray(buf[b:e]), dtype=ST_DTYPES[info["dtype"]]) if e > b \
                else torch.empty(0, dtype=ST_DTYPES[info["dtype"]])
            out[name] = t.reshape(info["shape"])
        return out


# ---- float64-faithful replacements of HF's float32 internals (same math) ----
def rms_forward(self, x):
    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

def rope_forward(self, x, position_ids):
    freqs = position_ids[..., None].to(self.inv_freq.dtype) * self.inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

def eager_attention(module, q, k, v, mask, scaling, dropout=0.0, **kwargs):
    k = modeling_llama.repeat_kv(k, module.num_key_value_groups)
    v = modeling_llama.repeat_kv(v, module.num_key_value_groups)
    w = torch.matmul(q, k.transpose(2, 3)) * scaling
    if mask is not None:
        w = w + mask
    w = torch.softmax(w, dim=-1)
    return torch.matmul(w, v).transpose(1, 2).contiguous(), w

def make_router_forward(norm_topk):
    def router_forward(self, h):
        logits = F.linear(h.reshape(-1, self.hidden_dim), self.weight)
        top, idx = torch.topk(torch.softmax(logits, dim=-1), self.top_k, dim=-1)
        return logits, (top / top.sum(-1, keepdim=True) if norm_topk else top), idx
    return router_forward

def patch_float64(model, cfg):
    modeling_llama.eager_attention_forward = eager_attention  # looked up at call time
    modeling_mixtral.eager_attention_forward = eager_attention
    for mod in model.modules():
        kind = type(mod).__name__
        if kind.endswith("RMSNorm"):
            mod.forward = types.MethodType(rms_forward, mod)
        elif kind.endswith("RotaryEmbedding"):
            d = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
            mod.inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
            mod.forward = types.MethodType(rope_forward, mod)
        elif kind == "MixtralTopKRouter":
            mod.forward = types.MethodType(make_router_forward(cfg.get("norm_topk_prob", True)), mod)


def to_dump_names(hf, inter):
    """HF tensors -> dump names (views, not copies). HF fuses the experts:
    mlp.experts.gate_up_proj[e] = cat(w1, w3), mlp.experts.down_proj[e] = w2."""
    out = {}
    for k, v in hf.items():
        pre, _, rest = k.partition(".mlp.")
        moe = pre + ".block_sparse_moe."
        if rest == "gate.weight":
            out[moe + "gate.weight"] = v
        elif rest == "experts.gate_up_proj":
            for e in range(v.shape[0]):
                out[f"{moe}experts.{e}.w1.weight"], out[f"{moe}experts.{e}.w3.weight"] = v[e, :inter], v[e, inter:]
        elif rest == "experts.down_proj":
            for e in range(v.shape[0]):
                out[f"{moe}experts.{e}.w2.weight"] = v[e]
        else:
            out[k] = v
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--tol", type=float, help="default: 1e-4 (float32 dump or --stock), 1e-9 (float64)")
    ap.add_argument("--stock", action="store_true", help="keep HF's float32 internals")
    args = ap.parse_args()
    cfg = json.load(open(f"{args.dir}/config.json"))
    pb, L = cfg["parabench"], cfg["num_hidden_layers"]
    tol = args.tol if args.tol is not None else \
        (1e-9 if cfg.get("torch_dtype") == "float64" and not args.stock else 1e-4)
    hf_fields = {k: v for k, v in cfg.items() if not k.startswith("parabench") and k != "torch_dtype"}
    moe = cfg.get("num_local_experts", 0) > 0
    if moe:
        if sorted(cfg.get("parabench_moe_layers") or range(L)) != list(range(L)):
            print(f"MoE only on layers {cfg['parabench_moe_layers']} of {L}: mixed dense/MoE layers "
                  "cannot be expressed in HF Mixtral")
            return 3
        if args.stock and not cfg.get("norm_topk_prob", True):
            print("norm_topk_prob=false cannot be expressed in stock HF Mixtral (drop --stock)")
            return 3
        hf_cfg = MixtralConfig(**hf_fields, attn_implementation="eager", experts_implementation="eager")
        model = MixtralForCausalLM(hf_cfg)
    else:
        model = LlamaForCausalLM(LlamaConfig(**hf_fields, attn_implementation="eager"))
    model = model.to(torch.float64).train()
    if not args.stock:
        patch_float64(model, cfg)

    # strict load: the dump's names must be exactly the HF model's (after un-fusing experts)
    params = load_safetensors(f"{args.dir}/model.safetensors")
    targets = to_dump_names(model.state_dict(), cfg["intermediate_size"])
    missing, unexpected = sorted(set(targets) - set(params)), sorted(set(params) - set(targets))
    bad_shape = [k for k in targets.keys() & params.keys() if targets[k].shape != params[k].shape]
    if missing or unexpected or bad_shape:
        print(f"key mismatch: missing {missing}\n  unexpected {unexpected}\n  bad shape {bad_shape}")
        return 2
    with torch.no_grad():
        for k, t in targets.items():
            t.copy_(params[k].to(torch.float64))  # t views the HF parameter storage

    batch = load_safetensors(f"{args.dir}/batch_step1.safetensors")
    m, B, V = pb["num_micro_batches"], pb["micro_batch_size"], cfg["vocab_size"]
    model.zero_grad(set_to_none=True)
    ces = []
    for j in range(m):
        rows = slice(j * B, (j + 1) * B)
        logits = model(input_ids=batch["input_ids"][rows]).logits
        ce = F.cross_entropy(logits.reshape(-1, V), batch["labels"][rows].reshape(-1))  # no shift
        (ce / m).backward()
        ces.append(ce.item())

    hf_ce, our_ce = sum(ces) / m, pb["history"][0]["ce"]
    ce_rel = abs(hf_ce - our_ce) / abs(hf_ce)
    ok = ce_rel <= tol
    print(f"{args.dir}: {type(model).__name__}, dump {cfg.get('torch_dtype')}, m={m} B={B} "
          f"S={pb['seq_length']}, tol {tol:g}{' (stock HF)' if args.stock else ''}")
    print(f"ce: hf {hf_ce:.15g}  ours {our_ce:.15g}  abs {abs(hf_ce - our_ce):.3e}  rel {ce_rel:.3e}  "
          f"{'PASS' if ok else 'FAIL'}")
    if moe and cfg.get("router_aux_loss_coef", 0) > 0:
        print("note: router_aux_loss_coef > 0, but HF's load-balancing loss is defined differently "
              "(averaged over all layers jointly, not divided by K): comparing the CE only, no gradients")
        return 0 if ok else 1

    grads = load_safetensors(f"{args.dir}/grads_step1.safetensors")
    hf_grads = to_dump_names({k: p.grad if p.grad is not None else torch.zeros_like(p)
                              for k, p in model.named_parameters()}, cfg["intermediate_size"])
    if set(grads) != set(hf_grads):
        print(f"gradient keys differ: missing {sorted(set(hf_grads) - set(grads))} "
              f"unexpected {sorted(set(grads) - set(hf_grads))}")
        return 2
    # A gradient that is zero up to rounding (e.g. the router's with K=1 and norm_topk_prob:
    # the renormalized weight p/p is constant) is measured against a floor, not against noise.
    floor = 1e-6 * torch.stack([g.norm() for g in hf_grads.values()]).norm().item()
    worst = 0.0
    print(f"{'tensor':58} {'rel_err':>10} {'max_abs':>10}   (rel to max(||hf||, {floor:.2e}))")
    for k, g in hf_grads.items():
        diff = g - grads[k].to(torch.float64)
        rel = diff.norm().item() / max(g.norm().item(), floor)
        worst = max(worst, rel)
        ok &= rel <= tol
        note = "  (||hf|| < floor)" if g.norm().item() < floor else ""
        print(f"{k:58} {rel:10.3e} {diff.abs().max().item():10.3e} {'PASS' if rel <= tol else 'FAIL'}{note}")
    print(f"max rel err: ce {ce_rel:.3e}, grads {worst:.3e} -> {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
