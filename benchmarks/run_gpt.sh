#!/usr/bin/env bash
# GPT training steps, loom vs PyTorch eager, same model and thread count, and nanoGPT's
# Shakespeare-char recipe (learning quality and wall time) for both.
#   benchmarks/run_gpt.sh [build-dir] [threads] [configs] [recipe: 0|1]
# e.g. benchmarks/run_gpt.sh build/release 2 "A B C" 1
set -euo pipefail
build=${1:-build/release}
threads=${2:-2}
configs=${3:-"A B"}
recipe=${4:-0}
here=$(dirname "$0")
data=${DATA:-$here/../../shared/data/tinyshakespeare.txt}
export OMP_NUM_THREADS=$threads
steps_for() { if [ "$1" = C ]; then echo 2; else echo 10; fi; }
# PyTorch at its best: OpenBLAS (apt-get install libopenblas0-pthread) without the environment's
# OPENBLAS_CORETYPE pin (which forces AVX2 kernels) and with OPENBLAS_NUM_THREADS=1 (fastest here:
# torch's own threads run the ops; 2 BLAS threads on top oversubscribe the cores).
torch_best=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 /usr/bin/python3 "$here/torch_gpt.py")
torch_env=(env OPENBLAS_NUM_THREADS=1 /usr/bin/python3 "$here/torch_gpt.py")
echo "| config | loom ms/step | loom peak MB | loom GFLOP/s | PyTorch ms/step (env default) | PyTorch ms/step (best) | PyTorch peak MB | loom speed-up vs best |"
echo "|---|---|---|---|---|---|---|---|"
for c in $configs; do
  n=$(steps_for "$c")
  l=$("$build/benchmarks/bench_gpt" --config "$c" --steps "$n")
  te=$("${torch_env[@]}" speed --config "$c" --steps "$n" --threads "$threads")
  tb=$("${torch_best[@]}" speed --config "$c" --steps "$n" --threads "$threads")
  get() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
  lm=$(get "$l" ms_per_step); tm=$(get "$tb" ms_per_step)
  echo "| $c | $lm | $(get "$l" peak_rss_mb) | $(get "$l" gflops) | $(get "$te" ms_per_step) | $tm | $(get "$tb" peak_rss_mb) | $(python3 -c "print(f'{$tm/$lm:.2f}x')") |"
done
if [ "$recipe" = 1 ]; then
  echo
  echo "nanoGPT Shakespeare-char recipe (2000 steps):"
  /usr/bin/time -f "loom wall %e s" "$build/examples/loom-train" --data "$data" --preset char --steps 2000 \
      --out "${OUT_DIR:-/tmp}/loom-recipe" --sample-tokens 0 2>/dev/null | tail -n 1
  "${torch_best[@]}" recipe --data "$data" --threads "$threads" 2>/dev/null
fi
