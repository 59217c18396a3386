#!/usr/bin/env python3
"""PyTorch on the CPU, same model and step as a parabench single-rank case, for DESIGN.md's
CPU target (the optimized backend at one rank at least as fast per training step as
PyTorch on the CPU, fp32).

Usage: python3 scripts/bench_torch_cpu.py [--hidden 256 --heads 8 --kv-heads 4 --ffn 768
       --vocab 2048 --layers 4 --batch 4 --seq 128 --steps 6 --threads N]
Builds LlamaForCausalLM (eager attention, fp32, untied head), times forward + backward +
AdamW with global-norm clipping over random tokens, and prints the median step time over
steps 2..N (the harness's convention). Needs torch and transformers (not part of the build).
"""
import argparse, statistics, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser()
for name, default in [("hidden", 256), ("heads", 8), ("kv-heads", 4), ("ffn", 768), ("vocab", 2048),
                      ("layers", 4), ("batch", 4), ("seq", 128), ("steps", 6), ("threads", 0)]:
    p.add_argument("--" + name, type=int, default=default)
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
cfg = LlamaConfig(hidden_size=a.hidden, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                  intermediate_size=a.ffn, vocab_size=a.vocab, num_hidden_layers=a.layers,
                  tie_word_embeddings=False, attn_implementation="eager", max_position_embeddings=a.seq)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg).float().train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
tokens = torch.randint(0, a.vocab, (a.batch, a.seq))
labels = torch.randint(0, a.vocab, (a.batch, a.seq))
times = []
for step in range(a.steps):
    t0 = time.perf_counter()
    logits = model(tokens).logits
    loss = torch.nn.functional.cross_entropy(logits.view(-1, a.vocab), labels.view(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=False)
    times.append((time.perf_counter() - t0) * 1e3)
timed = sorted(times[1:] if len(times) > 1 else times)
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads: step ms median {statistics.median(timed):.2f}"
      f" min {timed[0]:.2f} max {timed[-1]:.2f} over {len(timed)} steps")
