#!/usr/bin/env bash
# Runs loom's CPU benchmarks and the PyTorch script on the same shapes and thread count,
# then prints the side-by-side table. Usage: benchmarks/run_cpu.sh [build-dir] [threads]
set -euo pipefail
build=${1:-build/release}
threads=${2:-2}
out=${OUT_DIR:-$build/bench-results}
mkdir -p "$out"
export OMP_NUM_THREADS=$threads
reps=(--benchmark_repetitions=5 --benchmark_report_aggregates_only=true --benchmark_format=json)
"$build/benchmarks/bench_peak" "${reps[@]}" --benchmark_out="$out/peak.json" > /dev/null
"$build/benchmarks/bench_matmul" "${reps[@]}" --benchmark_out="$out/matmul.json" > /dev/null
"$build/benchmarks/bench_ops" "${reps[@]}" --benchmark_out="$out/ops.json" > /dev/null
"$build/benchmarks/bench_autograd" "${reps[@]}" --benchmark_out="$out/autograd.json" > /dev/null
# PyTorch at its best: Debian's torch with OpenBLAS (apt-get install libopenblas0-pthread) and
# without the OPENBLAS_CORETYPE pin some machines set (it forces the AVX2 kernels).
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 "$(dirname "$0")/torch_bench.py" --threads "$threads" --out "$out/torch.json" > /dev/null
python3 "$(dirname "$0")/compare.py" --loom "$out/peak.json" "$out/matmul.json" "$out/ops.json" "$out/autograd.json" --torch "$out/torch.json"
