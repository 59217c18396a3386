#!/usr/bin/env python3
"""PyTorch on the CPU, the same model and training step as parabench's single-rank default
case: the peer of the CPU speed target (issue 18; README "CPU speed").

Usage: python3 scripts/bench_torch_cpu.py [--hidden 256 --heads 8 --kv-heads 4 --ffn 768
       --vocab 2048 --layers 4 --batch 4 --seq 128 --steps 12 --threads N
       --attn eager|sdpa|both --json]

The model is written out here in plain torch (no transformers), to the same definition as
parabench's reference (reference/model/): a Llama decoder, fp32, untied embedding and head,
RMSNorm (eps 1e-5, torch's fused rms_norm), rotate-half RoPE (theta 1e4), causal GQA
attention, SwiGLU MLP, no biases; mean cross-entropy over the B*S tokens. One step is what
parabench's step is: zero grads, forward, backward, global-norm clip at 1.0, AdamW (lr 1e-3,
betas 0.9/0.95, eps 1e-8, weight decay 0.1 on the matrices only). Attention runs either as
Hugging Face's "eager" Llama attention does (GQA keys repeated, explicit mask, softmax,
matmul) or through torch's scaled_dot_product_attention (its fastest CPU kernel, flash
attention for fp32); --attn both times each. The step time is the median of steps 2..N
(the harness's convention: step 1 warms up).
"""
import argparse, json, math, statistics, time
import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
for name, default in [("hidden", 256), ("heads", 8), ("kv-heads", 4), ("ffn", 768), ("vocab", 2048),
                      ("layers", 4), ("batch", 4), ("seq", 128), ("steps", 12), ("threads", 0)]:
    p.add_argument("--" + name, type=int, default=default)
p.add_argument("--attn", choices=["eager", "sdpa", "both"], default="both")
p.add_argument("--json", action="store_true", help="one JSON line per attention kind instead of text")
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
H, A, G, Fh, V, L, B, S = a.hidden, a.heads, a.kv_heads, a.ffn, a.vocab, a.layers, a.batch, a.seq
D = H // A


def rope_tables():
    inv = 1.0 / (10000.0 ** (torch.arange(0, D, 2, dtype=torch.float64) / D))  # (D/2)
    ang = torch.arange(S, dtype=torch.float64)[:, None] * inv[None, :]           # (S, D/2)
    ang = torch.cat([ang, ang], dim=-1)                                          # (S, D)
    return ang.cos().float(), ang.sin().float()


def rotate_half(x):
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([-x2, x1], dim=-1)


class Layer(torch.nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.attn = attn
        self.n1, self.n2 = torch.nn.Parameter(torch.ones(H)), torch.nn.Parameter(torch.ones(H))
        self.q, self.k, self.v = (torch.nn.Linear(H, n * D, bias=False) for n in (A, G, G))
        self.o = torch.nn.Linear(A * D, H, bias=False)
        self.gate, self.up = torch.nn.Linear(H, Fh, bias=False), torch.nn.Linear(H, Fh, bias=False)
        self.down = torch.nn.Linear(Fh, H, bias=False)

    def forward(self, x, cos, sin, mask):
        h = F.rms_norm(x, (H,), self.n1, 1e-5)
        q = self.q(h).view(B, S, A, D).transpose(1, 2)  # (B, A, S, D)
        k = self.k(h).view(B, S, G, D).transpose(1, 2)  # (B, G, S, D)
        v = self.v(h).view(B, S, G, D).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if self.attn == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:  # transformers' eager_attention_forward
            k, v = k.repeat_interleave(A // G, dim=1), v.repeat_interleave(A // G, dim=1)
            s = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + mask
            o = torch.matmul(torch.softmax(s, dim=-1, dtype=torch.float32), v)
        x = x + self.o(o.transpose(1, 2).reshape(B, S, A * D))
        h = F.rms_norm(x, (H,), self.n2, 1e-5)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Model(torch.nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.emb = torch.nn.Embedding(V, H)
        self.layers = torch.nn.ModuleList(Layer(attn) for _ in range(L))
        self.norm = torch.nn.Parameter(torch.ones(H))
        self.head = torch.nn.Linear(H, V, bias=False)
        for w in self.parameters():
            if w.dim() == 2:
                torch.nn.init.normal_(w, std=0.02)
        cos, sin = rope_tables()
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)
        self.register_buffer("mask", torch.full((S, S), float("-inf")).triu(1))

    def forward(self, tokens):
        x = self.emb(tokens)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.mask)
        return self.head(F.rms_norm(x, (H,), self.norm, 1e-5))


def run(attn):
    torch.manual_seed(0)
    model = Model(attn).train()
    mats = [w for w in model.parameters() if w.dim() == 2]
    norms = [w for w in model.parameters() if w.dim() == 1]
    opt = torch.optim.AdamW([{"params": mats, "weight_decay": 0.1}, {"params": norms, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    tokens = torch.randint(0, V, (B, S))
    labels = torch.randint(0, V, (B, S))
    times, losses = [], []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(tokens).view(-1, V), labels.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append((time.perf_counter() - t0) * 1e3)
        losses.append(loss.item())
    timed = sorted(times[1:] if len(times) > 1 else times)
    blas = "mkl" if torch.backends.mkl.is_available() else "other"
    return {"peer": "pytorch", "torch": torch.__version__, "attn": attn, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "blas": blas,
            "step_ms_median": statistics.median(timed), "step_ms_min": timed[0], "step_ms_max": timed[-1],
            "timed_steps": len(timed), "first_loss": losses[0], "last_loss": losses[-1]}


for kind in (["eager", "sdpa"] if a.attn == "both" else [a.attn]):
    r = run(kind)
    if a.json:
        print(json.dumps(r))
    else:
        print(f"torch {r['torch']} ({kind} attention), {r['threads']} threads: step ms median "
              f"{r['step_ms_median']:.2f} min {r['step_ms_min']:.2f} max {r['step_ms_max']:.2f} over "
              f"{r['timed_steps']} steps; loss {r['first_loss']:.4f} -> {r['last_loss']:.4f}")
