#!/usr/bin/env python3
"""PyTorch reference for loom's batched generation benchmark (benchmarks/bench_generate).

Measures generated tokens/s of PyTorch's eager generation loop with a KV cache, at several batch
sizes, on the model of loom's "char" preset as the demo uses it (vocab 261 = 256 bytes + 5 chat
tokens, 4 layers, 4 heads, C 128, block 128, no biases, random init with a fixed seed). The model
classes are those of torch_gpt.py (GPT-2 layout, pre-LayerNorm, learned positions, tanh-GELU MLP,
tied embeddings); this file adds a forward that reads and writes per-layer key/value caches,
preallocated as (B, NH, block, HS) tensors and written in place.

One generation: prefill a (B, P) prompt of random token ids (filling the caches), then, --new
times, take the logits of the last position, sample with softmax at temperature 1 and
torch.multinomial, append the token and forward it alone through the cache. Every sequence runs
to --new tokens (no early stopping). Time = the whole call (cache allocation and prefill included);
tokens/s = B * new / time, the median of --repeats timed runs after one warm-up run.
ms_per_token_step = time / new (one decoding step for the whole batch, prefill spread over them).

  /usr/bin/python3 benchmarks/torch_generate.py                      # batch 1 and 64, 2 threads
  /usr/bin/python3 benchmarks/torch_generate.py --batch 1,8,64 --threads 2 --prompt 16 --new 96
  /usr/bin/python3 benchmarks/torch_generate.py --check              # cached loop == full forward

PyTorch at its best on the project's VM (see README.md, "GPT training"): OpenBLAS
(libopenblas0-pthread) without the environment's core-type pin and with one BLAS thread:
  env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 /usr/bin/python3 benchmarks/torch_generate.py

Prints one line per batch size, `torch_generate batch=B tokens_per_s=X ms_per_token_step=Y`, then
`final batch1_tokens_per_s=... batch64_tokens_per_s=... ratio=...` (ratio = the largest batch's
tokens/s over the smallest's). --check decodes 20 tokens greedily (argmax) at batch 3 with the
cache and with a plain full-sequence forward (no cache) and exits 1 unless the tokens are
identical and the last logits agree to 1e-4.
"""
import argparse
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt import GPT  # noqa: E402  (the same model as the training benchmarks)


def make_caches(model, B, block):
    """Per-layer (key, value) caches, each (B, NH, block, HS), uninitialised."""
    C = model.wte.weight.size(1)
    out = []
    for blk in model.h:
        shape = (B, blk.NH, block, C // blk.NH)
        out.append((torch.empty(shape), torch.empty(shape)))
    return out


def forward_cached(model, idx, caches, pos):
    """Forward idx (B, T) at absolute positions pos..pos+T-1, writing the keys and values into
    caches and attending to everything cached before them; returns the last position's logits (B, V)."""
    B, T = idx.shape
    x = model.wte(idx) + model.wpe(torch.arange(pos, pos + T))
    C = x.size(-1)
    end = pos + T
    mask = None
    if T > 1:  # query i (position pos+i) sees keys 0..pos+i
        mask = torch.triu(torch.ones(T, end, dtype=torch.bool), diagonal=pos + 1)
    for blk, (kc, vc) in zip(model.h, caches):
        NH = blk.NH
        HS = C // NH
        q, k, v = blk.c_attn(blk.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, NH, HS).transpose(1, 2) for t in (q, k, v))
        kc[:, :, pos:end].copy_(k)
        vc[:, :, pos:end].copy_(v)
        att = (q @ kc[:, :, :end].transpose(-2, -1)) * (1.0 / math.sqrt(HS))
        if mask is not None:
            att = att.masked_fill(mask, float("-inf"))
        y = (F.softmax(att, dim=-1) @ vc[:, :, :end]).transpose(1, 2).contiguous().view(B, T, C)
        x = x + blk.c_proj(y)
        x = x + blk.mlp_proj(F.gelu(blk.c_fc(blk.ln_2(x)), approximate="tanh"))
    return model.ln_f(x[:, -1]) @ model.wte.weight.t()


def forward_full(model, idx):
    """Plain forward of idx (B, T) without a cache (torch_gpt's blocks); returns the logits (B, T, V)."""
    T = idx.size(1)
    x = model.wte(idx) + model.wpe(torch.arange(T))
    for blk in model.h:
        x = blk(x)
    return model.ln_f(x) @ model.wte.weight.t()


def generate(model, prompt, new, block, greedy=False, generator=None):
    """Decode `new` tokens after prompt (B, P) with the KV cache; returns (tokens (B, P+new), last logits)."""
    B, P = prompt.shape
    caches = make_caches(model, B, block)
    tokens = torch.empty(B, P + new, dtype=torch.long)
    tokens[:, :P] = prompt
    logits = forward_cached(model, prompt, caches, 0)
    for i in range(new):
        if greedy:
            nxt = logits.argmax(dim=-1, keepdim=True)
        else:
            nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)  # temperature 1
        tokens[:, P + i:P + i + 1] = nxt
        if i + 1 < new:  # the last token is not forwarded: nothing reads its logits
            logits = forward_cached(model, nxt, caches, P + i)
    return tokens, logits


def build_model(args):
    torch.manual_seed(args.seed)
    model = GPT(args.vocab, args.block_size, args.n_layer, args.n_head, args.n_embd, bias=False)
    return model.eval()


def check(args):
    """Greedy decoding with the cache against recomputing the whole sequence each step."""
    model = build_model(args)
    B, new = 3, 20
    if args.prompt + new > args.block_size:
        print(f"torch_generate --check: --prompt {args.prompt} + 20 tokens exceed --block-size {args.block_size}")
        sys.exit(1)
    g = torch.Generator().manual_seed(args.seed + 1)
    prompt = torch.randint(0, args.vocab, (B, args.prompt), generator=g)
    cached, cached_logits = generate(model, prompt, new, args.block_size, greedy=True)
    full = prompt
    for _ in range(new):  # the last logits are those that chose the last token, as in generate()
        logits = forward_full(model, full)[:, -1]
        full = torch.cat([full, logits.argmax(dim=-1, keepdim=True)], dim=1)
    if not torch.equal(cached, full):
        diff = (cached != full).nonzero()[0].tolist()
        print(f"torch_generate --check FAILED: cached and full-forward tokens differ first at sequence "
              f"{diff[0]} position {diff[1]} ({cached[diff[0], diff[1]].item()} vs {full[diff[0], diff[1]].item()})")
        sys.exit(1)
    err = (cached_logits - logits).abs().max().item()
    if err > 1e-4:
        print(f"torch_generate --check FAILED: last logits differ by {err:.3g} (> 1e-4)")
        sys.exit(1)
    print(f"torch_generate check ok: batch={B} prompt={args.prompt} new={new} tokens identical, "
          f"max |logit diff|={err:.3g}")


def bench(args, batches):
    model = build_model(args)
    g = torch.Generator().manual_seed(args.seed + 2)
    rates = {}
    for B in batches:
        prompt = torch.randint(0, args.vocab, (B, args.prompt), generator=g)
        times = []
        for r in range(args.repeats + 1):  # run 0 warms up
            t0 = time.perf_counter()
            generate(model, prompt, args.new, args.block_size, generator=g)
            if r > 0:
                times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        rates[B] = B * args.new / t
        print(f"torch_generate batch={B} tokens_per_s={rates[B]:.1f} ms_per_token_step={t / args.new * 1e3:.3f}",
              flush=True)
    parts = [f"batch{B}_tokens_per_s={rates[B]:.1f}" for B in batches]
    if len(batches) > 1:
        parts.append(f"ratio={rates[batches[-1]] / rates[batches[0]]:.2f}")
    params = sum(p.numel() for p in model.parameters())
    print("final " + " ".join(parts) + f" prompt={args.prompt} new={args.new} threads={torch.get_num_threads()} "
          f"params={params} torch={torch.__version__}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", default="1,64", help="comma-separated batch sizes")
    ap.add_argument("--prompt", type=int, default=16, help="prompt length P")
    ap.add_argument("--new", type=int, default=96, help="tokens generated per sequence")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per batch size (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--vocab", type=int, default=261)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--check", action="store_true", help="verify the cached loop against a full forward")
    args = ap.parse_args()
    try:
        batches = [int(b) for b in args.batch.split(",") if b.strip()]
    except ValueError:
        ap.error(f"--batch must be a comma-separated list of integers, got '{args.batch}'")
    if not batches or min(batches) < 1:
        ap.error(f"--batch needs batch sizes >= 1, got '{args.batch}'")
    if args.prompt < 1 or args.new < 1 or args.repeats < 1:
        ap.error("--prompt, --new and --repeats must be >= 1")
    if not args.check and args.prompt + args.new > args.block_size:  # --check decodes 20 tokens
        ap.error(f"--prompt {args.prompt} + --new {args.new} exceed --block-size {args.block_size}")
    if args.n_embd % args.n_head:
        ap.error(f"--n-embd {args.n_embd} is not a multiple of --n-head {args.n_head}")
    torch.set_num_threads(args.threads)
    with torch.inference_mode():
        check(args) if args.check else bench(args, batches)


if __name__ == "__main__":
    main()
