#!/usr/bin/env python3
"""The PyTorch peer of suites/bench/bench_cuda_kernels (issue 19, "With the GPU"): the same
ops at the same shapes through PyTorch, in the same run, with the two ceilings measured in
that run, so that scripts/device/join_gpu_bench.py can put ours and PyTorch's side by side.

What it measures (bf16, batch 1; shapes H 4096, S 4096 and 8192, D 128, A 32, G 8,
F 14336, MoE E 8, K 2; --small: H 256, S 128, D 64, A 4, G 2, F 512, E 8, K 2):
  ceiling_copy          device-to-device copy bandwidth: dst.copy_(src) of a large tensor
  ceiling_gemm          a large bf16 GEMM (8192^3 through torch.matmul, i.e. cuBLAS)
  attention_{fwd,bwd,fwdbwd}/S<n>
                        scaled_dot_product_attention, causal, GQA (enable_gqa; k/v expanded
                        where a backend refuses it), per backend: flash, efficient, cudnn
                        (torch.nn.attention.sdpa_kernel); a backend that fails is skipped
                        with one line
  rmsnorm_{fwd,bwd}     F.rms_norm over (S, H)
  swiglu_{fwd,bwd}      silu(gate) * up over (S, F): eager and torch.compile'd
  rope_{fwd,bwd}        rotate_half RoPE over (S, A, D) = (S, H): eager and compiled
  moe_up_{fwd,bwd_input,bwd_weight}, moe_down_fwd
                        the MoE expert GEMMs, M = S*K rows in E balanced groups: a per-expert
                        matmul loop, and torch._grouped_mm where it exists
  dense_up_fwd          the same FLOPs as moe_up_fwd as one dense GEMM (F.linear)
  layer_fwdbwd/S4096    one Llama decoder layer (RMSNorm, QKV, RoPE, GQA attention via SDPA,
                        output projection, residual, RMSNorm, SwiGLU MLP), forward + backward
  A backward row ("_bwd") times the backward alone: the forward's graph is built once
  (outside the timing) and torch.autograd.grad(..., retain_graph=True) is timed.

Conventions (the same in bench_cuda_kernels.cc; the join relies on them):
  timing     CUDA events around one call, after a warm-up; median, min and max over --reps
             calls; before every timed call a buffer larger than L2 (max(256 MiB, 4x L2)) is
             written (zero_), so no call finds its inputs in L2. On the CPU (--device cpu)
             time.perf_counter and no flush.
  FLOPs      GEMM 2 m n k. Causal attention: forward 2 GEMMs of 2 B A S^2 D each, half of
             the scores masked: 2*2*B*A*S^2*D/2; backward 2.5x the forward (5 GEMMs: S
             recomputed, dV, dP, dQ, dK); fwd+bwd 3.5x. The layer: 3x its forward's model
             FLOPs (the GEMMs plus causal attention).
  bytes      the compulsory traffic of the principal tensors, each read or written once
             (2 bytes per bf16 element); vectors (norm weight, rstd, RoPE tables) are left
             out (under 1/32 of the traffic at these shapes):
               rmsnorm fwd 2 S H (x, y), bwd 3 S H (dy, x, dx); swiglu fwd 3 S F, bwd 5 S F;
               rope fwd and bwd 2 S H; copy: bytes read + bytes written.
  fraction   rate / the matching ceiling of this run: FLOP/s rows / ceiling_gemm, bytes/s
             rows / ceiling_copy.
  ops        names shared with bench_cuda_kernels; "impl" names PyTorch's variant.

Output: a Markdown table on stdout; --json PATH writes {"tool", "env", "ceilings", "rows",
"skipped"} (rewritten atomically after each group: a tmp file then os.replace, so a run
killed at its time limit keeps the groups that finished).

Run it here (CPU, tiny shapes; the ctest cli.peer_pytorch):
  python3 scripts/device/peer_pytorch.py --device cpu --small --reps 2
On the GPU machine (scripts/device/bench-gpu.sh runs it there; alone through the device
tool's run):
  run command="PYTHONUNBUFFERED=1 python3 scripts/device/peer_pytorch.py --reps 20
               --json $OUT/results/gpu/peer.json | tee $OUT/peer.md"  timeout_s=420
Flags: --device, --small, --reps, --warmup, --only name,name (groups: copy gemm attention
rmsnorm swiglu rope moe layer), --no-compile (skip torch.compile), --json PATH.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

GROUPS = ("copy", "gemm", "attention", "rmsnorm", "swiglu", "rope", "moe", "layer")


@dataclass(frozen=True)
class Shapes:
    H: int
    seqs: tuple
    D: int
    A: int
    G: int
    F: int
    E: int
    K: int
    B: int
    copy_mib: int  # the copy ceiling's tensor
    gemm_n: int  # the GEMM ceiling: n^3


FULL = Shapes(H=4096, seqs=(4096, 8192), D=128, A=32, G=8, F=14336, E=8, K=2, B=1, copy_mib=1024, gemm_n=8192)
SMALL = Shapes(H=256, seqs=(128,), D=64, A=4, G=2, F=512, E=8, K=2, B=1, copy_mib=16, gemm_n=256)

DT = torch.bfloat16
BF16_BYTES = 2


# ---- timing ------------------------------------------------------------------------------


class Timer:
    """time_ms(fn): one call's milliseconds. CUDA: events on the current stream, after
    writing a buffer larger than L2; CPU: perf_counter."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.flush_buf = None
        if self.cuda:
            l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)
            self.flush_buf = torch.empty(max(256 << 20, 4 * l2), dtype=torch.uint8, device=device)
            self.start = torch.cuda.Event(enable_timing=True)
            self.stop = torch.cuda.Event(enable_timing=True)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def time_ms(self, fn) -> float:
        if not self.cuda:
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        self.flush_buf.zero_()
        self.start.record()
        fn()
        self.stop.record()
        self.stop.synchronize()
        return self.start.elapsed_time(self.stop)


class Bench:
    """Collects rows and skips; knows the ceilings once they are measured."""

    def __init__(self, args, device, shapes: Shapes):
        self.args, self.device, self.shapes = args, device, shapes
        self.timer = Timer(device)
        self.rows: list[dict] = []
        self.skipped: list[dict] = []
        self.ceilings = {"copy_bytes_per_s": None, "gemm_flop_per_s": None}

    def measure(self, fn):
        for _ in range(self.args.warmup):
            fn()
        self.timer.sync()
        ms = [self.timer.time_ms(fn) for _ in range(self.args.reps)]
        return statistics.median(ms), min(ms), max(ms)

    def row(self, op, impl, shape, fn, flops=None, nbytes=None):
        """Times fn and appends one row (FLOP/s when flops is given, else bytes/s)."""
        med, lo, hi = self.measure(fn)
        work = flops if flops is not None else nbytes
        unit = "FLOP/s" if flops is not None else "bytes/s"
        rate = work / (med * 1e-3) if med > 0 else None
        ceiling = self.ceilings["gemm_flop_per_s" if flops is not None else "copy_bytes_per_s"]
        r = {"op": op, "impl": impl, "shape": shape, "ms_median": med, "ms_min": lo, "ms_max": hi,
             "flops": flops, "bytes": nbytes, "rate": rate, "unit": unit,
             "fraction_of_ceiling": (rate / ceiling) if (rate and ceiling) else None}
        self.rows.append(r)
        print(f"  {op:<24} {impl:<22} {med:10.4f} ms  {fmt_rate(rate, unit)}", file=sys.stderr, flush=True)
        return r

    def skip(self, op, impl, err):
        reason = one_line(err)
        self.skipped.append({"op": op, "impl": impl, "reason": reason})
        print(f"skip {op} [{impl}]: {reason}", file=sys.stderr, flush=True)

    def attempt(self, op, impl, shape, make, flops=None, nbytes=None):
        """make() builds the timed callable (setup outside the timing); any failure, in
        setup or in the timed calls, is one skip line."""
        try:
            fn = make()
            return self.row(op, impl, shape, fn, flops=flops, nbytes=nbytes)
        except Exception as e:  # noqa: BLE001 -- a backend or compile failure is a skip, not the end
            self.skip(op, impl, e)
            return None


def one_line(err) -> str:
    """The first line of an error (its type named) or of a reason given as a string."""
    s = (err if isinstance(err, str) else f"{type(err).__name__}: {err}").strip()
    return s.splitlines()[0][:300] if s else type(err).__name__


def fmt_rate(rate, unit) -> str:
    if rate is None:
        return "-"
    if unit == "FLOP/s":
        return f"{rate / 1e12:9.2f} TFLOP/s"
    return f"{rate / 1e9:9.1f} GB/s"


def randn(*shape, device, requires_grad=False, scale=1.0):
    t = torch.randn(*shape, device=device, dtype=torch.float32).mul_(scale).to(DT)
    return t.requires_grad_(requires_grad)


def grad_fn(out, inputs, dout):
    """The backward alone: autograd.grad over a graph kept alive (retain_graph)."""
    return lambda: torch.autograd.grad(out, inputs, dout, retain_graph=True)


# ---- the ceilings ------------------------------------------------------------------------


def bench_copy(b: Bench):
    n = b.shapes.copy_mib << 20
    src = torch.ones(n, dtype=torch.uint8, device=b.device)
    dst = torch.empty_like(src)
    r = b.attempt("ceiling_copy", "copy_", f"{b.shapes.copy_mib} MiB", lambda: (lambda: dst.copy_(src)), nbytes=2 * n)
    if r:
        b.ceilings["copy_bytes_per_s"] = r["rate"]
        r["fraction_of_ceiling"] = 1.0


def bench_gemm(b: Bench):
    n = b.shapes.gemm_n
    x, w = randn(n, n, device=b.device), randn(n, n, device=b.device)
    r = b.attempt("ceiling_gemm", "torch.matmul", f"{n}x{n}x{n} bf16", lambda: (lambda: torch.matmul(x, w)),
                  flops=2.0 * n**3)
    if r:
        b.ceilings["gemm_flop_per_s"] = r["rate"]
        r["fraction_of_ceiling"] = 1.0


def refresh_fractions(b: Bench):
    """Rows measured before a ceiling (none, in GROUPS order) get their fraction now."""
    for r in b.rows:
        c = b.ceilings["gemm_flop_per_s" if r["unit"] == "FLOP/s" else "copy_bytes_per_s"]
        if r["fraction_of_ceiling"] is None and r["rate"] and c:
            r["fraction_of_ceiling"] = r["rate"] / c


# ---- attention -----------------------------------------------------------------------------


def attention_flops_fwd(B, A, S, D) -> float:
    return 2.0 * 2.0 * B * A * S * S * D / 2  # two GEMMs, half the scores masked


def sdpa_backends():
    """(name, SDPBackend) for flash, efficient and cudnn, those this torch knows."""
    from torch.nn.attention import SDPBackend

    names = [("flash", "FLASH_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION"), ("cudnn", "CUDNN_ATTENTION")]
    return [(n, getattr(SDPBackend, a)) for n, a in names if hasattr(SDPBackend, a)]


def sdpa_call(backend, q, k, v, gqa_native: bool):
    from torch.nn.attention import sdpa_kernel

    rep = q.shape[1] // k.shape[1]

    def call():
        with sdpa_kernel(backend):
            if gqa_native:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            # k/v expanded per query head inside the call, as a model without native GQA does
            return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1),
                                                  is_causal=True)

    return call


def working_sdpa(backend, q, k, v):
    """The SDPA call for this backend: native GQA if it runs, else k/v expanded; raises
    the native attempt's error if neither runs."""
    try:
        call = sdpa_call(backend, q, k, v, True)
        call()
        return call, ""
    except Exception as first:  # noqa: BLE001
        try:
            call = sdpa_call(backend, q, k, v, False)
            call()
            return call, " (kv expanded)"
        except Exception:  # noqa: BLE001
            raise first from None


def bench_attention(b: Bench):
    s = b.shapes
    for S in s.seqs:
        shape = f"B {s.B}, S {S}, A {s.A}, G {s.G}, D {s.D}, causal"
        fl = attention_flops_fwd(s.B, s.A, S, s.D)
        q = randn(s.B, s.A, S, s.D, device=b.device, requires_grad=True)
        k = randn(s.B, s.G, S, s.D, device=b.device, requires_grad=True)
        v = randn(s.B, s.G, S, s.D, device=b.device, requires_grad=True)
        do = randn(s.B, s.A, S, s.D, device=b.device)
        for name, backend in sdpa_backends():
            try:
                call, note = working_sdpa(backend, q, k, v)
            except Exception as e:  # noqa: BLE001
                b.skip(f"attention/S{S}", name, e)
                continue
            impl = name + note
            with torch.no_grad():
                b.attempt(f"attention_fwd/S{S}", impl, shape, lambda: call, flops=fl)

            def make_bwd():
                o = call()
                return grad_fn(o, (q, k, v), do)

            b.attempt(f"attention_bwd/S{S}", impl, shape, make_bwd, flops=2.5 * fl)
            b.attempt(f"attention_fwdbwd/S{S}", impl, shape,
                      lambda: (lambda: torch.autograd.grad(call(), (q, k, v), do)), flops=3.5 * fl)
        del q, k, v, do


# ---- the memory-bound ops --------------------------------------------------------------------


def bench_rmsnorm(b: Bench):
    s = b.shapes
    S, H = s.seqs[0], s.H
    shape = f"({S}, {H})"
    x = randn(S, H, device=b.device, requires_grad=True)
    g = randn(H, device=b.device, requires_grad=True)
    dy = randn(S, H, device=b.device)
    with torch.no_grad():
        b.attempt("rmsnorm_fwd", "F.rms_norm", shape, lambda: (lambda: F.rms_norm(x, (H,), g, 1e-5)),
                  nbytes=BF16_BYTES * 2 * S * H)
    b.attempt("rmsnorm_bwd", "F.rms_norm", shape, lambda: grad_fn(F.rms_norm(x, (H,), g, 1e-5), (x, g), dy),
              nbytes=BF16_BYTES * 3 * S * H)


def swiglu(gate, up):
    return F.silu(gate) * up


def compiled(fn, b: Bench):
    """fn compiled by torch.compile, or None with --no-compile."""
    if b.args.no_compile:
        return None
    return torch.compile(fn, dynamic=False)


def eager_and_compiled(b: Bench, fn):
    out = [("eager", fn)]
    if b.args.no_compile:
        b.skip("(compile)", "compiled", "skipped by --no-compile")
    else:
        out.append(("compiled", compiled(fn, b)))
    return out


def bench_swiglu(b: Bench):
    s = b.shapes
    S, Fh = s.seqs[0], s.F
    shape = f"({S}, {Fh})"
    gate = randn(S, Fh, device=b.device, requires_grad=True)
    up = randn(S, Fh, device=b.device, requires_grad=True)
    dy = randn(S, Fh, device=b.device)
    for impl, fn in eager_and_compiled(b, swiglu):
        with torch.no_grad():
            b.attempt("swiglu_fwd", impl, shape, lambda: (lambda: fn(gate, up)), nbytes=BF16_BYTES * 3 * S * Fh)
        b.attempt("swiglu_bwd", impl, shape, lambda: grad_fn(fn(gate, up), (gate, up), dy),
                  nbytes=BF16_BYTES * 5 * S * Fh)


def rope_tables(S, D, device, theta=10000.0):
    """cos, sin (S, 1, D) of the rotate_half convention, in bf16."""
    inv = theta ** (-torch.arange(0, D, 2, dtype=torch.float64, device=device) / D)
    ang = torch.arange(S, dtype=torch.float64, device=device)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)[:, None, :]
    return ang.cos().to(DT), ang.sin().to(DT)


def rope(x, cos, sin):
    """x (S, A, D): x cos + rotate_half(x) sin (RoFormer, arXiv 2104.09864)."""
    h = x.shape[-1] // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], dim=-1)
    return x * cos + rot * sin


def bench_rope(b: Bench):
    s = b.shapes
    S = s.seqs[0]
    shape = f"({S}, {s.A}, {s.D})"
    x = randn(S, s.A, s.D, device=b.device, requires_grad=True)
    dy = randn(S, s.A, s.D, device=b.device)
    cos, sin = rope_tables(S, s.D, b.device)
    for impl, fn in eager_and_compiled(b, rope):
        with torch.no_grad():
            b.attempt("rope_fwd", impl, shape, lambda: (lambda: fn(x, cos, sin)), nbytes=BF16_BYTES * 2 * S * s.H)
        b.attempt("rope_bwd", impl, shape, lambda: grad_fn(fn(x, cos, sin), (x,), dy),
                  nbytes=BF16_BYTES * 2 * S * s.H)


# ---- the MoE expert GEMMs --------------------------------------------------------------------


def expert_loop(x, w, sizes):
    """y_i = x_i w_i^T per expert (w (E, out, in), the linear layout)."""
    outs, r = [], 0
    for i, n in enumerate(sizes):
        outs.append(x[r:r + n] @ w[i].t())
        r += n
    return torch.cat(outs)


def grouped_mm(x, w, offs):
    return torch._grouped_mm(x, w.transpose(-2, -1), offs=offs)


def bench_moe(b: Bench):
    s = b.shapes
    S = s.seqs[0]
    M = S * s.K
    sizes = [M // s.E] * s.E
    offs = torch.tensor(sizes, device=b.device, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    impls = [("loop", lambda x, w: expert_loop(x, w, sizes))]
    if hasattr(torch, "_grouped_mm"):
        impls.append(("torch._grouped_mm", lambda x, w: grouped_mm(x, w, offs)))
    else:
        b.skip("moe", "torch._grouped_mm", "not in this torch")
    for proj, (n_in, n_out) in {"up": (s.H, s.F), "down": (s.F, s.H)}.items():
        x = randn(M, n_in, device=b.device, requires_grad=True)
        w = randn(s.E, n_out, n_in, device=b.device, requires_grad=True, scale=n_in**-0.5)
        dy = randn(M, n_out, device=b.device)
        fl = 2.0 * M * n_in * n_out
        shape = f"M {M} in {s.E} groups of {M // s.E}, {n_in} -> {n_out}"
        for impl, fn in impls:
            with torch.no_grad():
                b.attempt(f"moe_{proj}_fwd", impl, shape, lambda: (lambda: fn(x, w)), flops=fl)
            if proj == "up":
                b.attempt("moe_up_bwd_input", impl, shape, lambda: grad_fn(fn(x, w), (x,), dy), flops=fl)
                b.attempt("moe_up_bwd_weight", impl, shape, lambda: grad_fn(fn(x, w), (w,), dy), flops=fl)
        if proj == "up":
            wd = w.detach()[0]
            with torch.no_grad():
                b.attempt("dense_up_fwd", "F.linear", f"({M}, {n_in}) x ({n_out}, {n_in})^T",
                          lambda: (lambda: F.linear(x, wd)), flops=fl)
        del x, w, dy


# ---- one Llama decoder layer -------------------------------------------------------------------


class LlamaLayer(torch.nn.Module):
    """x -> h = x + Wo attn(rope(q), rope(k), v) -> h + W2(silu(W1 n) * W3 n), pre-RMSNorm,
    GQA through SDPA (its best backend, chosen by PyTorch)."""

    def __init__(self, s: Shapes, S: int, device):
        super().__init__()
        self.s = s
        kw = {"device": device, "dtype": DT}
        self.n1 = torch.nn.Parameter(torch.ones(s.H, **kw))
        self.n2 = torch.nn.Parameter(torch.ones(s.H, **kw))
        self.qkv = torch.nn.Linear(s.H, (s.A + 2 * s.G) * s.D, bias=False, **kw)
        self.o = torch.nn.Linear(s.A * s.D, s.H, bias=False, **kw)
        self.w13 = torch.nn.Linear(s.H, 2 * s.F, bias=False, **kw)
        self.w2 = torch.nn.Linear(s.F, s.H, bias=False, **kw)
        self.cos, self.sin = rope_tables(S, s.D, device)

    def forward(self, x):  # x (B, S, H)
        s = self.s
        B, S, _ = x.shape
        q, k, v = self.qkv(F.rms_norm(x, (s.H,), self.n1, 1e-5)).split([s.A * s.D, s.G * s.D, s.G * s.D], -1)
        q = rope(q.view(B, S, s.A, s.D), self.cos, self.sin).transpose(1, 2)
        k = rope(k.view(B, S, s.G, s.D), self.cos, self.sin).transpose(1, 2)
        v = v.view(B, S, s.G, s.D).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        h = x + self.o(a.transpose(1, 2).reshape(B, S, s.A * s.D))
        g, u = self.w13(F.rms_norm(h, (s.H,), self.n2, 1e-5)).chunk(2, -1)
        return h + self.w2(F.silu(g) * u)


def layer_flops(s: Shapes, S: int) -> float:
    """3x the forward's model FLOPs: the GEMMs and causal attention."""
    N = s.B * S
    gemm = 2.0 * N * (s.H * (s.A + 2 * s.G) * s.D + s.A * s.D * s.H + 3 * s.H * s.F)
    return 3.0 * (gemm + attention_flops_fwd(s.B, s.A, S, s.D))


def bench_layer(b: Bench):
    s = b.shapes
    S = s.seqs[0]
    layer = LlamaLayer(s, S, b.device)
    x = randn(s.B, S, s.H, device=b.device, requires_grad=True)
    dy = randn(s.B, S, s.H, device=b.device)
    params = [x] + list(layer.parameters())

    def step():
        return torch.autograd.grad(layer(x), params, dy)

    b.attempt(f"layer_fwdbwd/S{S}", "eager", f"B {s.B}, S {S}, H {s.H}, A {s.A}, G {s.G}, F {s.F}",
              lambda: step, flops=layer_flops(s, S))


# ---- output --------------------------------------------------------------------------------------


def environment(device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "host": platform.node(),
           "device": str(device), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update({"gpu": p.name, "cuda": torch.version.cuda, "sms": p.multi_processor_count,
                    "l2_bytes": getattr(p, "L2_cache_size", None), "cudnn": torch.backends.cudnn.version()})
    return env


def write_json(path, b: Bench, env):
    doc = {"tool": "peer_pytorch", "env": env, "shapes": asdict(b.shapes), "reps": b.args.reps,
           "ceilings": b.ceilings, "rows": b.rows, "skipped": b.skipped}
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def markdown(b: Bench, env) -> str:
    lines = [f"PyTorch peer: {env.get('gpu', env['device'])}, torch {env['torch']}, {b.args.reps} reps, "
             f"ceilings: copy {fmt_rate(b.ceilings['copy_bytes_per_s'], 'bytes/s').strip()}, "
             f"GEMM {fmt_rate(b.ceilings['gemm_flop_per_s'], 'FLOP/s').strip()}", "",
             "| op | impl | shape | ms median | min | max | rate | of ceiling |", "|---|---|---|---|---|---|---|---|"]
    for r in b.rows:
        frac = f"{r['fraction_of_ceiling']:.2f}" if r["fraction_of_ceiling"] is not None else "-"
        lines.append(f"| {r['op']} | {r['impl']} | {r['shape']} | {r['ms_median']:.4f} | {r['ms_min']:.4f} | "
                     f"{r['ms_max']:.4f} | {fmt_rate(r['rate'], r['unit']).strip()} | {frac} |")
    if b.skipped:
        lines += ["", "Skipped:"] + [f"- {x['op']} [{x['impl']}]: {x['reason']}" for x in b.skipped]
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description="PyTorch peer of bench_cuda_kernels (see the file header)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="tiny shapes (H 256, S 128, D 64), e.g. for the CPU")
    p.add_argument("--reps", type=int, default=20, help="timed calls per row (median, min, max)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before the timed ones")
    p.add_argument("--only", default="", help="comma-separated groups: " + " ".join(GROUPS))
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--json", default="", help="write the rows here (atomically)")
    a = p.parse_args(argv)
    only = [g for g in a.only.split(",") if g]
    bad = [g for g in only if g not in GROUPS]
    if bad:
        p.error(f"--only: unknown group {bad[0]!r} (groups: {' '.join(GROUPS)})")
    if a.reps < 1 or a.warmup < 0:
        p.error("--reps must be >= 1 and --warmup >= 0")
    a.groups = only or list(GROUPS)
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available to this torch")
        torch.empty(1, device=device)
    except Exception as e:  # noqa: BLE001
        print(f"peer_pytorch: device {args.device!r} unusable: {one_line(e)}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    b = Bench(args, device, SMALL if args.small else FULL)
    env = environment(device)
    benches = {"copy": bench_copy, "gemm": bench_gemm, "attention": bench_attention, "rmsnorm": bench_rmsnorm,
               "swiglu": bench_swiglu, "rope": bench_rope, "moe": bench_moe, "layer": bench_layer}
    for g in GROUPS:
        if g not in args.groups:
            continue
        print(f"== {g}", file=sys.stderr, flush=True)
        try:
            benches[g](b)
        except Exception as e:  # noqa: BLE001 -- e.g. out of memory in setup: the group is one skip line
            b.skip(g, "(group)", e)
            if os.environ.get("PB_PEER_TRACEBACK"):
                traceback.print_exc()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        refresh_fractions(b)
        if args.json:
            write_json(args.json, b, env)
    print(markdown(b, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
