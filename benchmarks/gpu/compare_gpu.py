#!/usr/bin/env python3
"""Side-by-side tables of loom's and PyTorch's GPU benchmark lines (JSON, one per line), as
written by bench_gpu and torch_gpu.py in the same run on the same card. Ratios > 1 mean loom
is faster. The first table pairs one loom row with one PyTorch row per benchmark (the GPT-2 rows
at the first (B, T, V) that bench_gpu ran); the GPT-2 table has one row per (dtype, B, V) with
loom, torch eager and torch compile side by side (ms, tokens/s, MFU, peak memory); rows pair up
by their batch/vocab fields or, in older files, by the B..xT..[xV..] in "shape". bench_gpu's runs with each
block recomputed in backward (bench "gpt2_step_recompute") have a table of their own, against loom's run
without at the same (B, V) where there is one. Missing runs show "—", failed ones "OOM"/"error", with the
shortened messages listed last.
  Usage: compare_gpu.py loom.jsonl [torch.jsonl]"""
import json
import re
import sys


def load(path):
    """The JSON rows of one benchmark file. A file that cannot be read is named on stderr and gives
    no rows (its columns then show "—"), so that a run without PyTorch still prints loom's side."""
    rows = []
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if line.startswith("{"):
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        print(f"compare_gpu.py: {path}:{n}: not JSON ({e.msg}); line skipped", file=sys.stderr)
    except OSError as e:
        print(f"compare_gpu.py: cannot read {path} ({e.strerror}); its columns show —", file=sys.stderr)
    return rows


def find(rows, bench, impl, dtype=None, key=None):
    """The first timed row of bench/impl (and dtype, and gpt_key, when given), or None."""
    for r in rows:
        if r.get("bench") == bench and r.get("impl") == impl and (dtype is None or r.get("dtype") == dtype) and \
                (key is None or gpt_key(r) == key) and "ms" in r:
            return r
    return None


def gpt_key(r):
    """(B, T, V) of a gpt2_step row: its batch/vocab fields, else read from its shape ("B16xT1024xV50304")."""
    m = re.search(r"B(\d+)xT(\d+)(?:xV(\d+))?", r.get("shape") or "")
    B = r.get("batch", int(m.group(1)) if m else None)
    V = r.get("vocab", int(m.group(3)) if m and m.group(3) else None)
    return B, int(m.group(2)) if m else None, V


def gpt_side(r):
    """The GPT-2 table's column group of a row: loom, eager or compile (None for a whole-benchmark error row)."""
    impl = r.get("impl", "")
    return "loom" if impl.startswith("loom-") else "compile" if "compile" in impl else "eager" if "eager" in impl \
        else None


def short(text, n=200):
    """An error message on one line, at most n characters, with its table pipes escaped."""
    text = " ".join(str(text).split())
    return (text if len(text) <= n else text[:n - 1] + "…").replace("|", "\\|")


def is_oom(r):
    """True when an error row is an out-of-memory failure."""
    e = str(r.get("error", "")).lower()
    return bool(r.get("oom")) or "out of memory" in e or "outofmemory" in e or "cannot allocate" in e


def gpt_table(loom, torch):
    """The GPT-2 step table: one row per (dtype, B, T, V), loom / eager / compile side by side, then its note."""
    cells = {}  # (dtype, B, T, V) -> {side: row}; a timed row wins over an error row
    for r in loom + torch:
        side = gpt_side(r)
        if r.get("bench") != "gpt2_step" or side is None or ("ms" not in r and "error" not in r):
            continue
        k = (r.get("dtype", ""), *gpt_key(r))
        old = cells.setdefault(k, {}).get(side)
        if old is None or ("ms" in r and "ms" not in old):
            cells[k][side] = r
    if not cells:
        return
    sides = ("loom", "eager", "compile")

    def cell(r, fmt, first):
        if r is None or ("ms" not in r and not first):
            return "—"
        if "ms" not in r:  # a failed run: said once, in its ms column
            return "OOM" if is_oom(r) else "error"
        return fmt(r)

    def num(key, f):
        return lambda r: "—" if r.get(key) is None else f(r[key])

    metrics = (("ms", num("ms", lambda v: f"{v:.1f}")), ("tokens/s", num("tokens_per_s", lambda v: f"{v:,.0f}")),
               ("MFU", num("mfu", lambda v: f"{100 * v:.1f}%")), ("peak GB", num("peak_mem_gb", lambda v: f"{v:.1f}")))
    Ts = sorted({k[2] for k in cells if k[2] is not None})
    print(f"GPT-2 124M training step, T {', '.join(map(str, Ts)) or '?'}: loom | torch eager | torch compile")
    print()
    head = ["dtype", "B", "V"] + [f"{m} {s}" for m, _ in metrics for s in sides] + ["loom vs eager", "loom vs compile"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * 3 + "---:|" * (len(head) - 3))
    order = {"bfloat16": 0, "float32": 1}
    for k in sorted(cells, key=lambda k: (order.get(k[0], 2), k[0], k[3] or 0, k[1] or 0, k[2] or 0)):
        c = cells[k]
        row = [k[0] or "?", str(k[1] or "?"), str(k[3] or "?")]
        row += [cell(c.get(s), f, i == 0) for i, (_, f) in enumerate(metrics) for s in sides]
        lr = c.get("loom")
        for s in ("eager", "compile"):
            tr = c.get(s)
            ok = lr is not None and tr is not None and "ms" in lr and "ms" in tr
            row.append(f"{tr['ms'] / lr['ms']:.2f}×" if ok else "—")
        print("| " + " | ".join(row) + " |")
    peaks = sorted({r["peak_tflops"] for c in cells.values() for r in c.values() if r.get("peak_tflops")})
    print()
    print(f"MFU: model FLOP/s (nanoGPT's 6 N + 12 L H Q T per token, N = all parameters, the tied wte counted once) "
          f"over the dense bf16 peak ({', '.join(f'{p:g}' for p in peaks) or '?'} TFLOP/s), for the fp32 rows too. "
          f"fp32 runs only at the first (B, V). Ratios > 1: loom is faster.")


def recompute_table(loom):
    """loom's bf16 GPT-2 step with each block recomputed in backward, one row per (B, V): ms, tokens/s, MFU and
    peak memory, and against loom's bf16 run without recomputation at the same (B, V) when the file has one."""
    rows = [r for r in loom if r.get("bench") == "gpt2_step_recompute" and ("ms" in r or "error" in r)]
    if not rows:
        return
    print()
    print("GPT-2 124M bf16 step with each block recomputed in backward (loom): against loom without")
    print()
    print("| B | V | ms | tokens/s | MFU | peak GB | time vs without | peak memory vs without |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (gpt_key(r)[2] or 0, gpt_key(r)[0] or 0)):
        B, _, V = gpt_key(r)
        if "ms" not in r:
            print(f"| {B} | {V} | {'OOM' if is_oom(r) else 'error'} | — | — | — | — | — |")
            continue
        plain = find(loom, "gpt2_step", "loom-bf16", key=gpt_key(r))
        t = f"{r['ms'] / plain['ms']:.2f}×" if plain else "—"
        m = f"{r['peak_mem_gb'] / plain['peak_mem_gb']:.2f}×" if plain and plain.get("peak_mem_gb") else "—"
        print(f"| {B} | {V} | {r['ms']:.1f} | {r['tokens_per_s']:,.0f} | {100 * r['mfu']:.1f}% | "
              f"{r['peak_mem_gb']:.1f} | {t} | {m} |")


def fmt(r, key="ms", digits=3):
    return "—" if r is None or key not in r else f"{r[key]:.{digits}f}"


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[1] in ("-h", "--help"):
        print("usage: compare_gpu.py loom.jsonl [torch.jsonl]", file=sys.stderr)
        sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
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
    # The GPT-2 rows of this table: at the first (B, T, V) run (bench_gpu and torch_gpu.py run the pairs in one order).
    first = [gpt_key(r) for r in loom + torch if r.get("bench") == "gpt2_step" and gpt_side(r) and gpt_key(r)[0]]
    key = first[0] if first else None
    B, T, V = key or ("?", "?", "?")
    lb = find(loom, "gpt2_step", "loom-bf16", key=key)
    for impl, target in (("torch-eager-bf16", "≥ 1× eager"), ("torch-compile-bf16", "stretch ≥ 1×")):
        tr = find(torch, "gpt2_step", impl, key=key)
        row(f"GPT-2 124M step B{B} T{T} V{V or '?'}, loom bf16 vs {impl}", lb, tr, target)
    row(f"GPT-2 124M step B{B} T{T} V{V or '?'}, loom fp32 vs torch-eager-fp32",
        find(loom, "gpt2_step", "loom-fp32", key=key), find(torch, "gpt2_step", "torch-eager-fp32", key=key), "")
    print()
    gpt_table(loom, torch)
    recompute_table(loom)
    if errors:
        print()
        print("| failed run | error |")
        print("|---|---|")
        for r in errors:
            name = " ".join(str(r.get(f)) for f in ("bench", "impl", "dtype", "shape") if r.get(f))
            print(f"| {short(name, 120)} | {short(r['error'])} |")


if __name__ == "__main__":
    main()
