#!/usr/bin/env python3
"""Builds the side-by-side table of benchmarks/README.md from Google Benchmark JSON files
(loom) and torch_bench.py's JSON (PyTorch). Uses medians of the repetitions.

    python3 benchmarks/compare.py --loom peak.json matmul.json ops.json --torch torch.json
"""
import argparse
import json


def medians(paths):
    out = {}
    for p in paths:
        for b in json.load(open(p))["benchmarks"]:
            if b.get("aggregate_name") != "median":
                continue
            name = b["run_name"].replace("/min_time:2.000", "").replace("/real_time", "")
            out[name] = b
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loom", nargs="+", required=True)
    ap.add_argument("--torch", required=True)
    args = ap.parse_args()
    L = medians(args.loom)
    T = json.load(open(args.torch))["results"]

    fma1 = L["BM_peak_fma_1thread"]["GFLOP/s"] if "BM_peak_fma_1thread" in L else None
    fma = L["BM_peak_fma_all_threads"]["GFLOP/s"]
    bw = L["BM_peak_memory_triad"]["GB/s"]
    print(f"Peak probe: FP32 FMA {fma1:.0f} GFLOP/s on 1 thread, {fma:.0f} GFLOP/s on all threads; "
          f"memory {bw:.1f} GB/s (triad), {L['BM_peak_memory_copy']['GB/s']:.1f} GB/s (copy)\n")

    print("| matmul (M×K @ K×N) | Eigen direct | loom | loom (allocating) | PyTorch (out=) | PyTorch | loom / Eigen | loom / PyTorch |")
    print("|---|---|---|---|---|---|---|---|")
    names = ["forward 4096×768 @ 768×3072", "grad x 4096×3072 @ (768×3072)ᵀ", "grad W (4096×768)ᵀ @ 4096×3072"]
    for i, nm in enumerate(names):
        e = L[f"BM_matmul_eigen/fwd0_dx1_dW2:{i}"]["GFLOP/s"]
        lo = L[f"BM_matmul_loom/fwd0_dx1_dW2:{i}"]["GFLOP/s"]
        la = L[f"BM_matmul_loom_alloc/fwd0_dx1_dW2:{i}"]["GFLOP/s"]
        to, ta = T[f"matmul_out/{i}"]["GFLOP/s"], T[f"matmul_alloc/{i}"]["GFLOP/s"]
        print(f"| {nm} | {e:.0f} | {lo:.0f} | {la:.0f} | {to:.0f} | {ta:.0f} | {lo / e:.3f} | {lo / to:.2f} |")
    b = L["BM_matmul_batched_attention"]["GFLOP/s"]
    tb = T["matmul_batched_attention"]["GFLOP/s"]
    print(f"| batched 96 × (256×64 @ 64×256) | | {b:.0f} | | {tb:.0f} | | | {b / tb:.2f} |")
    print(f"\nGFLOP/s; FMA peak on all threads = {fma:.0f}.\n")

    print("| small model's products (config A) | loom GFLOP/s | PyTorch GFLOP/s | loom / PyTorch |")
    print("|---|---|---|---|")
    for i, nm in enumerate(["forward (768×128) @ (512×128)ᵀ", "grad x (768×512) @ (512×128)", "grad W (768×512)ᵀ @ (768×128)"]):
        lo, to = L[f"BM_matmul_small/fwd0_dx1_dW2:{i}"]["GFLOP/s"], T[f"matmul_small/{i}"]["GFLOP/s"]
        print(f"| {nm} | {lo:.0f} | {to:.0f} | {lo / to:.2f} |")
    print("\n| causal attention, forward + backward | loom ms | loom GFLOP/s | PyTorch ms | PyTorch GFLOP/s | loom / PyTorch |")
    print("|---|---|---|---|---|---|")
    for i, nm in enumerate(["B 12, NH 4, T 64, HS 32 (config A)", "B 1, NH 12, T 1024, HS 64 (GPT-2)"]):
        lb, tb_ = L[f"BM_attention/configA0_gpt2T1024_1:{i}"], T[f"attention/{i}"]
        lms = lb["real_time"] * {"ms": 1.0, "us": 1e-3, "ns": 1e-6}[lb["time_unit"]]
        print(f"| {nm} | {lms:.2f} | {lb['GFLOP/s']:.0f} | {tb_['ms']:.2f} | {tb_['GFLOP/s']:.0f} | {tb_['ms'] / lms:.2f} |")
    print()

    print("| op (16384×1024 fp32) | loom GB/s | % of triad bandwidth | PyTorch GB/s | loom / PyTorch |")
    print("|---|---|---|---|---|")
    for op in ["add", "add_bias_broadcast", "gelu_tanh", "softmax", "layer_norm", "add_layer_norm", "sum_rows"]:
        if f"BM_{op}" not in L or op not in T:
            continue  # a run from before the op's benchmark
        lg = L[f"BM_{op}"]["GB/s"]
        tg = T[op]["GB/s"]
        print(f"| {op} | {lg:.1f} | {100 * lg / bw:.0f}% | {tg:.1f} | {lg / tg:.2f} |")

    if "BM_autograd_chain_add" in L:
        print("\n| autograd overhead (1000 adds of 16 floats) | loom µs/op | PyTorch µs/op | PyTorch / loom |")
        print("|---|---|---|---|")
        for name, label in [("autograd_chain_add", "forward + backward"), ("forward_only_chain_add", "forward only (no grad)")]:
            lu = 1e6 / L[f"BM_{name}"]["ops/s"]
            tu = T[name]["us_per_op"]
            print(f"| {label} | {lu:.3f} | {tu:.3f} | {tu / lu:.1f}× |")


if __name__ == "__main__":
    main()
