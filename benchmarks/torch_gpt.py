#!/usr/bin/env python3
"""PyTorch side of loom's GPT benchmarks: the same model as loom's nn::GPT (GPT-2 layout,
pre-LayerNorm, learned positions, tanh-GELU MLP, tied embeddings, optional biases), trained the
same way (AdamW over decay/no-decay groups, warmup + cosine, clipping).

  speed:   /usr/bin/python3 benchmarks/torch_gpt.py speed --config A --steps 10 --threads 2
  recipe:  /usr/bin/python3 benchmarks/torch_gpt.py recipe --data tinyshakespeare.txt --threads 2

`speed` prints the median ms per training step (forward + backward + AdamW) and the peak
resident memory; `recipe` runs nanoGPT's character-level Shakespeare CPU recipe and prints the
final validation loss and the wall time.
"""
import argparse
import math
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {  # vocab, layers, heads, C, T, B
    "A": dict(vocab=65, n_layer=4, n_head=4, n_embd=128, T=64, B=12),
    "B": dict(vocab=8192, n_layer=6, n_head=6, n_embd=384, T=256, B=8),
    "C": dict(vocab=50257, n_layer=12, n_head=12, n_embd=768, T=1024, B=4),
}


class Block(nn.Module):
    def __init__(self, C, NH, bias):
        super().__init__()
        self.NH = NH
        self.ln_1, self.ln_2 = nn.LayerNorm(C, elementwise_affine=True), nn.LayerNorm(C)
        if not bias:
            self.ln_1.bias, self.ln_2.bias = None, None
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C, bias=bias), nn.Linear(C, C, bias=bias)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C, bias=bias), nn.Linear(4 * C, C, bias=bias)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        att = F.softmax(att.masked_fill(mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, T, n_layer, n_head, n_embd, bias=False):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, n_embd), nn.Embedding(T, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        if not bias:
            self.ln_f.bias = None
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                torch.nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                torch.nn.init.zeros_(p)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.h:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(B * T, -1), targets.view(-1), ignore_index=-1)


def optimizer(model, lr, wd, betas):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=betas)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def speed(args):
    c = CONFIGS[args.config]
    torch.manual_seed(0)
    model = GPT(c["vocab"], c["T"], c["n_layer"], c["n_head"], c["n_embd"], bias=False)
    opt = optimizer(model, 1e-4, 0.1, (0.9, 0.95))
    x = torch.randint(0, c["vocab"], (c["B"], c["T"]))
    y = torch.randint(0, c["vocab"], (c["B"], c["T"]))
    times = []
    for i in range(args.steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i > 0:
            times.append(time.perf_counter() - t0)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"config={args.config} ms_per_step={statistics.median(times) * 1e3:.2f} peak_rss_mb={peak_rss_mb():.0f} "
          f"params={n_params} threads={torch.get_num_threads()} torch={torch.__version__}")


def recipe(args):
    text = open(args.data, "rb").read()
    chars = sorted(set(text))
    lut = {b: i for i, b in enumerate(chars)}
    ids = torch.tensor([lut[b] for b in text], dtype=torch.long)
    n = int(0.9 * len(ids))
    train, val = ids[:n], ids[n:]
    B, T, steps, lr, min_lr, warmup = 12, 64, args.steps, 1e-3, 1e-4, 100
    torch.manual_seed(args.seed)
    model = GPT(len(chars), T, 4, 4, 128, bias=False)
    opt = optimizer(model, lr, 0.1, (0.9, 0.99))

    def batch(data):
        ix = torch.randint(len(data) - T, (B,))
        return torch.stack([data[i:i + T] for i in ix]), torch.stack([data[i + 1:i + 1 + T] for i in ix])

    def get_lr(it):
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        if it > steps:
            return min_lr
        r = (it - warmup) / (steps - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr - min_lr)

    @torch.no_grad()
    def evaluate(data, iters=20):
        model.eval()
        out = statistics.mean(model(*batch(data)).item() for _ in range(iters))
        model.train()
        return out

    t0 = time.perf_counter()
    for it in range(steps):
        for g in opt.param_groups:
            g["lr"] = get_lr(it)
        loss = model(*batch(train))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (it + 1) % 250 == 0 or it + 1 == steps:
            print(f"step {it + 1}: train {evaluate(train):.4f} val {evaluate(val):.4f} "
                  f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    wall = time.perf_counter() - t0
    print(f"final step={steps} val_loss={evaluate(val, args.final_eval_iters):.4f} wall_s={wall:.1f} "
          f"ms_per_step={wall / steps * 1e3:.1f}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--config", choices=list(CONFIGS), required=True)
    s.add_argument("--steps", type=int, default=10)
    s.add_argument("--threads", type=int, default=2)
    r = sub.add_parser("recipe")
    r.add_argument("--data", required=True)
    r.add_argument("--steps", type=int, default=2000)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--seed", type=int, default=1337)
    r.add_argument("--final-eval-iters", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    speed(args) if args.cmd == "speed" else recipe(args)


if __name__ == "__main__":
    main()
