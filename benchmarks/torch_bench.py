#!/usr/bin/env python3
"""PyTorch side of loom's CPU benchmarks: the same shapes, layouts and byte counts as
bench_matmul.cpp and bench_ops.cpp, timed the same way (median of repeated runs).

Run with Debian's python3-torch (which belongs to /usr/bin/python3):
    /usr/bin/python3 benchmarks/torch_bench.py --threads 2 --out torch.json
"""
import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F


def timeit(fn, min_time=1.0, repeats=5):
    """Median over `repeats` runs of the mean time of one call (seconds), each run >= min_time / repeats."""
    fn()  # warm-up: allocations, thread pool start
    per_run = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_time / repeats:
                break
        per_run.append(dt / n)
    return statistics.median(per_run)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="torch_bench.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    res = {}

    # matmul: y = x @ W, dx = dy @ W^T, dW = x^T @ dy at M 4096, K 768, N 3072 (transposes are views).
    M, K, N = 4096, 768, 3072
    x, W, dy = torch.randn(M, K), torch.randn(K, N), torch.randn(M, N)
    for which, (a, b) in enumerate([(x, W), (dy, W.t()), (x.t(), dy)]):
        out = torch.empty(a.shape[0], b.shape[1])
        flops = 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
        s = timeit(lambda: torch.mm(a, b, out=out), min_time=4.0)
        res[f"matmul_out/{which}"] = {"ms": s * 1e3, "GFLOP/s": flops / s / 1e9}
        s = timeit(lambda: torch.mm(a, b), min_time=4.0)
        res[f"matmul_alloc/{which}"] = {"ms": s * 1e3, "GFLOP/s": flops / s / 1e9}

    q, k = torch.randn(96, 256, 64), torch.randn(96, 256, 64)
    kt = k.transpose(-1, -2)
    out = torch.empty(96, 256, 256)
    s = timeit(lambda: torch.bmm(q, kt, out=out))
    res["matmul_batched_attention"] = {"ms": s * 1e3, "GFLOP/s": 2.0 * 96 * 256 * 256 * 64 / s / 1e9}

    # The small model's products (config A): x (768, 128), W (512, 128) as (out, in).
    x, W, dy = torch.randn(768, 128), torch.randn(512, 128), torch.randn(768, 512)
    for which, (a, b) in enumerate([(x, W.t()), (dy, W), (dy.t(), x)]):
        out = torch.empty(a.shape[0], b.shape[1])
        s = timeit(lambda: torch.mm(a, b, out=out))
        res[f"matmul_small/{which}"] = {"ms": s * 1e3, "GFLOP/s": 2.0 * a.shape[0] * a.shape[1] * b.shape[1] / s / 1e9}

    # Causal attention forward + backward as nanoGPT writes it without a fused kernel (PyTorch
    # 1.13 has no scaled_dot_product_attention): q k^T, masked_fill, softmax, @ v.
    for which, (B, NH, T, HS) in enumerate([(12, 4, 64, 32), (1, 12, 1024, 64)]):
        q, k, v = (torch.randn(B, NH, T, HS, requires_grad=True) for _ in range(3))
        gy = torch.randn(B, NH, T, HS)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)

        def step():
            att = (q @ k.transpose(-2, -1)) * (1.0 / HS ** 0.5)
            y = torch.softmax(att.masked_fill(mask, float("-inf")), dim=-1) @ v
            y.backward(gy)
            q.grad = k.grad = v.grad = None

        s = timeit(step)
        res[f"attention/{which}"] = {"ms": s * 1e3, "GFLOP/s": 7.0 * B * NH * T * T * HS / s / 1e9}

    rows, cols = 16384, 1024
    a, b = torch.randn(rows, cols), torch.randn(rows, cols)
    bias = torch.randn(cols)
    nbytes = a.numel() * 4
    ops = {
        "add": (lambda: a + b, 3 * nbytes),
        "add_bias_broadcast": (lambda: a + bias, 2 * nbytes),
        "gelu_tanh": (lambda: F.gelu(a, approximate="tanh"), 2 * nbytes),
        "softmax": (lambda: torch.softmax(a, -1), 2 * nbytes),
        "sum_rows": (lambda: a.sum(1), nbytes),
    }
    ln_in = torch.randn(rows * cols // 768, 768)
    w, bb = torch.randn(768), torch.randn(768)
    ops["layer_norm"] = (lambda: F.layer_norm(ln_in, (768,), w, bb), 2 * ln_in.numel() * 4)
    ln_r = torch.randn(rows * cols // 768, 768)
    ops["add_layer_norm"] = (lambda: F.layer_norm(ln_in + ln_r, (768,), w, bb), 4 * ln_in.numel() * 4)
    for name, (fn, nb) in ops.items():
        s = timeit(fn)
        res[name] = {"ms": s * 1e3, "GB/s": nb / s / 1e9}

    # Autograd overhead: 1000 adds on 16-element tensors, forward + backward, per op.
    x, c = torch.randn(16, requires_grad=True), torch.randn(16)

    def chain(backward):
        h = x
        for _ in range(1000):
            h = h + c
        if backward:
            h.sum().backward()
            x.grad = None

    s = timeit(lambda: chain(True))
    res["autograd_chain_add"] = {"us_per_op": s / 1000 * 1e6}
    with torch.no_grad():
        s = timeit(lambda: chain(False))
    res["forward_only_chain_add"] = {"us_per_op": s / 1000 * 1e6}

    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version()}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": res}, f, indent=1)
    for k_, v in res.items():
        print(f"{k_:28s} " + "  ".join(f"{u}={x:.2f}" for u, x in v.items()))


if __name__ == "__main__":
    main()
