#!/usr/bin/env python3
"""Side-by-side table of loom's and PyTorch's GPU benchmark lines (JSON, one per line), as
written by bench_gpu and torch_gpu.py in the same run on the same card. Ratios > 1 mean loom
is faster.  Usage: compare_gpu.py loom.jsonl [torch.jsonl]"""
import json
import sys


def load(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    except OSError:
        pass
    return rows


def find(rows, bench, impl, dtype=None):
    for r in rows:
        if r.get("bench") == bench and r.get("impl") == impl and (dtype is None or r.get("dtype") == dtype) and "ms" in r:
            return r
    return None


def fmt(r, key="ms", digits=3):
    return "—" if r is None or key not in r else f"{r[key]:.{digits}f}"


def main():
    loom = load(sys.argv[1])
    torch = load(sys.argv[2]) if len(sys.argv) > 2 else []
    errors = [r for r in loom + torch if "error" in r]
    print("| benchmark | loom | PyTorch | loom speed vs PyTorch | target |")
    print("|---|---|---|---|---|")

    def row(name, lr, tr, target, unit="ms"):
        ratio = "—" if lr is None or tr is None else f"{tr['ms'] / lr['ms']:.2f}×"
        print(f"| {name} | {fmt(lr)} {unit} | {fmt(tr)} {unit} | {ratio} | {target} |")

    row("LayerNorm fwd+bwd 16384×768 fp32", find(loom, "layernorm", "loom"), find(torch, "layernorm", "torch"),
        "≥ 0.91× (within 10%)")
    row("LayerNorm fwd 16384×768 fp32", find(loom, "layernorm_fwd", "loom"), find(torch, "layernorm_fwd", "torch"), "")
    flash = find(torch, "attention", "torch-flash", "bfloat16")
    row("attention fwd+bwd bf16 (loom op) vs flash", find(loom, "attention", "loom", "bfloat16"), flash, "≥ 0.5×")
    row("attention fwd+bwd bf16 (kernels only) vs flash", find(loom, "attention", "loom-kernels", "bfloat16"), flash, "≥ 0.5×")
    row("attention fwd bf16 (kernels only) vs flash", find(loom, "attention_fwd", "loom-kernels", "bfloat16"),
        find(torch, "attention_fwd", "torch-flash", "bfloat16"), "")
    row("attention fwd+bwd fp32 vs efficient", find(loom, "attention", "loom", "float32"),
        find(torch, "attention", "torch-efficient", "float32"), "")
    lb = find(loom, "gpt2_step", "loom-bf16")
    for impl, target in (("torch-eager-bf16", "≥ 1× eager"), ("torch-compile-bf16", "stretch ≥ 1×")):
        tr = find(torch, "gpt2_step", impl)
        row(f"GPT-2 124M step B16 T1024, loom bf16 vs {impl}", lb, tr, target)
    row("GPT-2 124M step, loom fp32 vs torch-eager-fp32", find(loom, "gpt2_step", "loom-fp32"),
        find(torch, "gpt2_step", "torch-eager-fp32"), "")
    print()
    print("| GPT-2 124M step (B 16, T 1024) | ms | tokens/s | peak memory GB | loss |")
    print("|---|---|---|---|---|")
    for r in [x for x in loom + torch if x.get("bench") == "gpt2_step" and "ms" in x]:
        print(f"| {r['impl']} | {r['ms']:.1f} | {r.get('tokens_per_s', 0):.0f} | {r.get('peak_mem_gb', 0):.1f} | "
              f"{r.get('loss', float('nan')):.3f} |")
    for r in errors:
        print(f"| error | {r.get('bench')} {r.get('impl')} {r.get('dtype', '')}: {r['error'][:200]} |")


if __name__ == "__main__":
    main()
