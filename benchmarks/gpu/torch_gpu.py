#!/usr/bin/env python3
"""PyTorch GPU baselines for loom's C++ GPU benchmarks (written for PyTorch 2.x on an H100).

What it measures:
  layernorm   F.layer_norm on (16384, 768) fp32: forward+backward (dx, dweight, dbias) and
              forward only (bench "layernorm_fwd"); reports GB/s over the minimal bytes.
  attention   F.scaled_dot_product_attention(is_causal=True) on q, k, v (16, 12, 1024, 64):
              forward+backward and forward only ("attention_fwd"), each SDPA backend selected
              explicitly with torch.nn.attention.sdpa_kernel (bf16: flash, efficient, math;
              fp32: efficient, math); reports TFLOP/s with causal FLOP counts.
  gpt2_step   GPT-2 124M training steps (forward, cross-entropy, backward, clipping, AdamW) at
              T 1024 for every (vocabulary, batch) pair of --vocabs x --batches (defaults 50257 and
              16): eager bf16 autocast and torch.compile bf16 autocast for every pair, eager fp32
              (slow) for the first pair only. Each row has tokens_per_s and mfu: model FLOP/s
              (nanoGPT's 6 N + 12 L H Q T per token, N = all parameters, the tied wte counted
              once) over --peak-tflops, the dense bf16 peak (fp32 rows too). A run that runs out of
              memory prints an error row and the next one goes on.

How: inputs are random (seeded, never zeros); each benchmark runs warm-up iterations first,
then times every repeat separately with a pair of CUDA events (synchronizing after each) and
reports the median in milliseconds. TF32 stays at PyTorch's default (off for matmuls).

Output: one JSON object per line on stdout (bench, impl, dtype, shape, ms, plus tokens_per_s /
gbps / tflops / ... where relevant); a failing benchmark prints a line with "error" instead.
Progress goes to stderr.

  python3 benchmarks/gpu/torch_gpu.py [--only layernorm,attention,gpt2_step] [--steps 10] [--no-compile]
                                      [--batches 16,64] [--vocabs 50257,50304] [--peak-tflops 989]
  python3 benchmarks/gpu/torch_gpu.py --device cpu --tiny      # smoke test of the logic, no GPU
                                      # (tiny defaults: batch 2, vocabulary 101; --batches/--vocabs apply)
"""
import argparse
import contextlib
import gc
import inspect
import json
import math
import re
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # PyTorch >= 2.3; older versions (CPU smoke test) run without backend selection
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:
    SDPBackend = sdpa_kernel = None

BENCHES = ("layernorm", "attention", "gpt2_step")


def _sdpa_reference(q, k, v, is_causal=True):
    """Causal attention written out; only used by the CPU smoke test on PyTorch < 2.0."""
    T = q.size(-2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=q.device), diagonal=1)
    return F.softmax(att.masked_fill(mask, float("-inf")), dim=-1) @ v


sdpa = getattr(F, "scaled_dot_product_attention", _sdpa_reference)
# torch.cuda.OutOfMemoryError since PyTorch 1.13; before that an out-of-memory error is a RuntimeError
OutOfMemoryError = getattr(torch.cuda, "OutOfMemoryError", ())


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def emit(**rec):
    print(json.dumps(rec), flush=True)


def free_memory(device):
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def time_ms(fn, device, warmup, reps):
    """Run fn `warmup` times untimed, then `reps` times, each timed alone; return the median ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# ---------------------------------------------------------------------------------- layernorm
def bench_layernorm(args):
    N, C = (64, 32) if args.tiny else (16 * 1024, 768)
    dev, reps, warm = args.device, args.reps or 50, args.warmup
    x = torch.randn(N, C, device=dev, requires_grad=True)
    w = (1.0 + 0.1 * torch.randn(C, device=dev)).requires_grad_()
    b = (0.1 * torch.randn(C, device=dev)).requires_grad_()
    dy = torch.randn(N, C, device=dev)
    shape = f"N{N}xC{C}"

    def fwd():
        with torch.no_grad():
            F.layer_norm(x, (C,), w, b, 1e-5)

    def fwd_bwd():  # autograd.grad so that nothing accumulates into .grad between repeats
        y = F.layer_norm(x, (C,), w, b, 1e-5)
        torch.autograd.grad(y, (x, w, b), dy)

    # Minimal traffic (weight/bias ignored): fwd reads x, writes y; bwd reads dy, x, writes dx.
    elt = N * C * 4
    ms = time_ms(fwd_bwd, dev, warm, reps)
    emit(bench="layernorm", impl="torch", dtype="float32", shape=shape, ms=ms, gbps=5 * elt / (ms * 1e6))
    ms = time_ms(fwd, dev, warm, reps)
    emit(bench="layernorm_fwd", impl="torch", dtype="float32", shape=shape, ms=ms, gbps=2 * elt / (ms * 1e6))


# ---------------------------------------------------------------------------------- attention
def bench_attention(args):
    B, NH, T, HS = (2, 2, 16, 8) if args.tiny else (16, 12, 1024, 64)
    dev, reps, warm = args.device, args.reps or 20, args.warmup
    shape = f"B{B}xNH{NH}xT{T}xHS{HS}"
    # FLOP convention: forward = 2 matmuls (QK^T, PV) of 2*T*T*HS each per head, halved for the
    # causal mask -> 4*B*NH*T^2*HS / 2; backward = 5 such matmuls = 2.5x forward; fwd+bwd = 3.5x.
    fwd_flops = 4 * B * NH * T * T * HS / 2
    if dev == "cuda" and sdpa_kernel is not None:
        cases = [(torch.bfloat16, "torch-flash", SDPBackend.FLASH_ATTENTION),
                 (torch.bfloat16, "torch-efficient", SDPBackend.EFFICIENT_ATTENTION),
                 (torch.bfloat16, "torch-math", SDPBackend.MATH),
                 (torch.float32, "torch-efficient", SDPBackend.EFFICIENT_ATTENTION),
                 (torch.float32, "torch-math", SDPBackend.MATH)]
    else:  # CPU smoke test / old PyTorch: let PyTorch pick the backend
        cases = [(torch.float32, "torch-default" if sdpa is not _sdpa_reference else "reference", None)]

    for dtype, impl, backend in cases:
        dname = str(dtype).replace("torch.", "")
        for bench in ("attention", "attention_fwd"):
            try:
                q, k, v = (torch.randn(B, NH, T, HS, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
                dout = torch.randn(B, NH, T, HS, device=dev, dtype=dtype)

                def fwd():
                    with torch.no_grad():
                        sdpa(q, k, v, is_causal=True)

                def fwd_bwd():
                    out = sdpa(q, k, v, is_causal=True)
                    torch.autograd.grad(out, (q, k, v), dout)

                ctx = sdpa_kernel(backend) if backend is not None else contextlib.nullcontext()
                with ctx:
                    if bench == "attention":
                        ms, flops = time_ms(fwd_bwd, dev, warm, reps), 3.5 * fwd_flops
                    else:
                        ms, flops = time_ms(fwd, dev, warm, reps), fwd_flops
                emit(bench=bench, impl=impl, dtype=dname, shape=shape, ms=ms, tflops=flops / (ms * 1e9))
            except Exception as e:  # e.g. a backend that does not support this dtype / GPU
                emit(bench=bench, impl=impl, dtype=dname, shape=shape, error=f"{type(e).__name__}: {e}"[:500])
            finally:
                q = k = v = dout = None
                free_memory(dev)


# ---------------------------------------------------------------------------------- GPT-2
class Block(nn.Module):
    """Pre-LayerNorm transformer block: causal self-attention (SDPA) + tanh-GELU MLP."""

    def __init__(self, C, NH, bias):
        super().__init__()
        self.NH = NH
        self.ln_1, self.ln_2 = nn.LayerNorm(C, eps=1e-5), nn.LayerNorm(C, eps=1e-5)  # LayerNorms keep their bias
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C, bias=bias), nn.Linear(C, C, bias=bias)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C, bias=bias), nn.Linear(4 * C, C, bias=bias)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v))
        y = sdpa(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    """nanoGPT-style GPT-2: learned positions, tied wte / lm_head, forward returns the loss."""

    def __init__(self, vocab, block, n_layer, n_head, n_embd, bias=True):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, n_embd), nn.Embedding(block, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for blk in self.h:
            x = blk(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(B * T, -1), targets.view(-1))  # autocast runs it in fp32


def flops_per_token(n_params, cfg, T):
    """Model FLOPs per token of a training step (nanoGPT / PaLM): 6 N + 12 L H Q T, N = all parameters."""
    return 6 * n_params + 12 * cfg["n_layer"] * cfg["n_head"] * (cfg["n_embd"] // cfg["n_head"]) * T


def gpt_variant(args, impl, B, V):
    """One GPT-2 training-step run (impl: torch-{eager,compile}-{bf16,fp32}) at batch B, vocabulary V: one JSON row."""
    dev, tiny = args.device, args.tiny
    cfg = dict(vocab=V, block=16, n_layer=2, n_head=2, n_embd=32) if tiny else \
        dict(vocab=V, block=1024, n_layer=12, n_head=12, n_embd=768)
    T = 16 if tiny else 1024
    bf16, compiled = impl.endswith("bf16") and dev == "cuda", impl.startswith("torch-compile")
    dtype = "bfloat16" if bf16 else "float32"  # bf16 = autocast over fp32 master weights
    shape = f"gpt2-124M B{B}xT{T}xV{V}" if not tiny else f"tiny B{B}xT{T}xV{V}"
    row = dict(bench="gpt2_step", impl=impl, dtype=dtype, shape=shape, vocab=V, batch=B)
    warm = 1 if tiny else 3
    steps = 1 if tiny else (max(2, args.steps // 2) if impl.endswith("fp32") else args.steps)
    if impl.endswith("fp32"):
        warm = min(warm, 2)
    old_tf32 = model = run_model = opt = x = y = last = None
    try:
        if impl.endswith("fp32"):  # plain fp32 matmuls, no TF32
            old_tf32 = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        torch.manual_seed(0)
        model = GPT(**cfg, bias=True).to(dev)
        run_model = torch.compile(model) if compiled else model
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        extra = {"fused": True} if dev == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters else {}
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=6e-4, betas=(0.9, 0.95), **extra)
        x = torch.randint(0, cfg["vocab"], (B, T), device=dev)
        y = torch.randint(0, cfg["vocab"], (B, T), device=dev)
        last = []

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
                loss = run_model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            last[:] = [loss]

        log(f"[gpt2_step] {impl}: {warm} warm-up steps{' (compiling)' if compiled else ''}, {steps} timed")
        ms = time_ms(step, dev, warm, steps)
        params = sum(p.numel() for p in model.parameters())  # parameters() yields the tied wte once
        tokens_per_s = B * T / (ms / 1e3)
        rec = dict(row, ms=ms, tokens_per_s=tokens_per_s,
                   mfu=flops_per_token(params, cfg, T) * tokens_per_s / (args.peak_tflops * 1e12),
                   peak_tflops=args.peak_tflops, loss=last[0].item(), steps=steps, params=params)
        if dev == "cuda":
            rec["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
        emit(**rec)
    except OutOfMemoryError as e:  # a batch too large for the card: report it, go on with the next run
        emit(**row, error=f"OutOfMemoryError: {e}"[:500], oom=True)
    except Exception as e:
        emit(**row, error=f"{type(e).__name__}: {e}"[:500])
    finally:
        if old_tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = old_tf32
        model = run_model = opt = x = y = last = None
        if compiled:  # drop the compiled graphs and their buffers before the next variant
            import torch._dynamo as dynamo
            dynamo.reset()
        free_memory(dev)


def bench_gpt2_step(args):
    """Every (vocabulary, batch) pair: eager and compiled bf16; eager fp32 (slow) for the first pair only."""
    pairs = [(V, B) for V in args.vocabs for B in args.batches]
    for i, (V, B) in enumerate(pairs):
        impls = ["torch-eager-bf16", "torch-compile-bf16"] + (["torch-eager-fp32"] if i == 0 else [])
        if args.no_compile or args.tiny:
            impls.remove("torch-compile-bf16")
        for impl in impls:
            gpt_variant(args, impl, B, V)
            free_memory(args.device)


# ---------------------------------------------------------------------------------- main
def size_list(text):
    """argparse type of --batches / --vocabs: a comma list of positive integers, e.g. "16,64"."""
    items = text.split(",")
    if not all(re.fullmatch(r"[0-9]+", t) and int(t) > 0 for t in items):
        raise argparse.ArgumentTypeError(f"malformed value {text!r} (expected a comma-separated list of positive "
                                         "integers, e.g. 16,64)")
    return [int(t) for t in items]


def positive_float(text):
    """argparse type of --peak-tflops: a positive finite number."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (0 < v < float("inf")):
        raise argparse.ArgumentTypeError(f"malformed value {text!r} (expected a positive number)")
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of " + ",".join(BENCHES))
    ap.add_argument("--steps", type=int, default=10, help="timed GPT steps (fp32 runs half)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile GPT variant")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, one repeat (smoke test)")
    ap.add_argument("--reps", type=int, default=0, help="override repeats for layernorm/attention")
    ap.add_argument("--batches", type=size_list, default=None,
                    help="gpt2_step batch sizes, comma list (default 16; --tiny: 2)")
    ap.add_argument("--vocabs", type=size_list, default=None,
                    help="gpt2_step vocabulary sizes, comma list (default 50257; --tiny: 101)")
    ap.add_argument("--peak-tflops", type=positive_float, default=989.0,
                    help="dense bf16 peak TFLOP/s, the MFU denominator (default 989: H100/H200 SXM)")
    args = ap.parse_args()
    args.batches = args.batches or ([2] if args.tiny else [16])
    args.vocabs = args.vocabs or ([101] if args.tiny else [50257])
    args.warmup = 1 if args.tiny else 5
    if args.tiny:
        args.reps = args.reps or 1
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s): {unknown}; choose from {BENCHES}")

    log(f"torch {torch.__version__}, device {args.device}"
        + (f" ({torch.cuda.get_device_name()}, CUDA {torch.version.cuda})" if args.device == "cuda" else ""))
    fns = {"layernorm": bench_layernorm, "attention": bench_attention, "gpt2_step": bench_gpt2_step}
    for name in names:
        log(f"[{name}] running")
        t0 = time.perf_counter()
        try:
            fns[name](args)
        except Exception as e:  # a whole benchmark failed (e.g. allocation of its inputs)
            emit(bench=name, impl="torch", dtype="", shape="", error=f"{type(e).__name__}: {e}"[:500])
        free_memory(args.device)
        log(f"[{name}] done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
