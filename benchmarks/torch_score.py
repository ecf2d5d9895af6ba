#!/usr/bin/env python3
"""PyTorch reference for loom's likelihood scoring (benchmarks/bench_score, align/scoring.hpp).

Loads a loom checkpoint (a GPT of loom's layout, character tokenizer) into the model class of
torch_gpt.py and scores a multiple-choice JSONL set in the simple layout
({"context": ..., "choices": [...], "answer": i}) the way loom does: each ending is the
continuation of START + context, where START is a newline for a character model; the ending's
tokens alone are summed, log_softmax in float32 as loom computes them. Sequences are scored in
batches, sorted by length and padded on the right (eval mode, torch.no_grad, PyTorch's eager loop).

  env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 /usr/bin/python3 benchmarks/torch_score.py \
      --ckpt out/ckpt.safetensors --data sets/arith_mc.jsonl --threads 2 [--compare loom_dump.jsonl]

--per-item scores one item per forward pass (its endings as the rows), the loop nanoGPT's and
llm.c's HellaSwag evaluations run; by default sequences are batched as loom batches them.

Prints `torch_score items=N sequences=S examples_per_s=X acc=A` (median of --repeats timed runs
after one warm-up). --compare reads bench_score's --dump and prints the largest relative
difference of the log-probabilities and the number of items whose choice differs, then exits 1
unless every log-probability agrees to 1e-4 relative and every choice is the same.
"""
import argparse
import json
import os
import statistics
import struct
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt import GPT  # noqa: E402


def load_checkpoint(path):
    """The config, the character tokenizer and a torch GPT holding the checkpoint's weights."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    cfg = json.loads(meta["config"])
    tok = json.loads(meta["tokenizer"])
    if tok.get("kind") != "char":
        sys.exit("torch_score: only character-level checkpoints are supported")
    chars = bytes.fromhex(tok["chars_hex"])
    data = raw[8 + n:]
    model = GPT(cfg["vocab_size"], cfg["block_size"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"], bias=cfg["bias"])
    rename = {"attn.c_attn": "c_attn", "attn.c_proj": "c_proj", "mlp.c_fc": "c_fc", "mlp.c_proj": "mlp_proj"}
    state = {}
    for name, v in header.items():
        if not name.startswith("model."):
            continue
        a, b = v["data_offsets"]
        t = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).reshape(v["shape"])
        key = name[len("model.transformer."):]
        for old, new in rename.items():
            key = key.replace(old, new)
        state[key] = t
    missing = model.load_state_dict(state, strict=True)
    del missing
    model.eval()
    index = {c: i for i, c in enumerate(chars)}
    return cfg, (lambda s: [index[c] for c in s.encode()]), model


def examples(items, encode, block):
    """(ids, first scored position) per ending, as loom's continuation_example builds them."""
    start = encode("\n")
    out = []
    for it in items:
        ctx = encode(it["context"])
        for ch in it["choices"]:
            cont = encode(it.get("delimiter", "") + ch)
            room = block + 1 - len(start) - len(cont)
            keep = min(room, len(ctx))
            ids = start + ctx[len(ctx) - keep:] + cont
            out.append((ids, len(ids) - len(cont)))
    return out


def logits(model, idx):
    B, T = idx.shape
    x = model.wte(idx) + model.wpe(torch.arange(T))
    for blk in model.h:
        x = blk(x)
    return model.ln_f(x) @ model.wte.weight.t()


def score(model, exs, batch, groups=None):
    """log p(continuation | the rest) per example, in batches sorted by length (or, with groups,
    one batch per group of consecutive examples: an item's endings)."""
    order = sorted(range(len(exs)), key=lambda i: len(exs[i][0]))
    chunks = [order[lo:lo + batch] for lo in range(0, len(order), batch)]
    if groups:
        chunks, at = [], 0
        for g in groups:
            chunks.append(list(range(at, at + g)))
            at += g
    out = [0.0] * len(exs)
    with torch.no_grad():
        for chunk in chunks:
            T = max(len(exs[i][0]) for i in chunk) - 1
            x = torch.zeros(len(chunk), T, dtype=torch.int64)
            y = torch.full((len(chunk), T), -1, dtype=torch.int64)
            for r, i in enumerate(chunk):
                ids, first = exs[i]
                x[r, :len(ids) - 1] = torch.tensor(ids[:-1])
                y[r, first - 1:len(ids) - 1] = torch.tensor(ids[first:])
            lp = F.log_softmax(logits(model, x), dim=-1)
            tok = lp.gather(2, y.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (y >= 0)
            for r, i in enumerate(chunk):
                out[i] = float(tok[r].double().sum())
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compare")
    p.add_argument("--per-item", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg, encode, model = load_checkpoint(a.ckpt)
    items = [json.loads(line) for line in open(a.data) if line.strip()]

    def run():
        t0 = time.perf_counter()
        groups = [len(it["choices"]) for it in items] if a.per_item else None
        lp = score(model, examples(items, encode, cfg["block_size"]), a.batch_size, groups)
        return lp, len(items) / (time.perf_counter() - t0)

    lp, _ = run()
    rate = statistics.median(run()[1] for _ in range(a.repeats))
    per_item, at = [], 0
    for it in items:
        per_item.append(lp[at:at + len(it["choices"])])
        at += len(it["choices"])
    chosen = [max(range(len(v)), key=lambda k: (v[k], -k)) for v in per_item]
    acc = sum(c == it["answer"] for c, it in zip(chosen, items)) / len(items)
    print(f"torch_score items={len(items)} sequences={len(lp)} examples_per_s={rate:.1f} acc={acc:.4f}")
    if a.compare:
        loom = [json.loads(line) for line in open(a.compare)]
        worst, differ = 0.0, 0
        for mine, theirs in zip(per_item, loom):
            for x, y in zip(mine, theirs["logprobs"]):
                worst = max(worst, abs(x - y) / max(abs(x), 1e-12))
        differ = sum(c != t["chosen"] for c, t in zip(chosen, loom))
        print(f"compare max_rel_diff={worst:.3g} choices_differ={differ} items={len(loom)}")
        sys.exit(0 if worst <= 1e-4 and differ == 0 and len(loom) == len(items) else 1)


if __name__ == "__main__":
    main()
