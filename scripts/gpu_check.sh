#!/usr/bin/env bash
# One call on a GPU machine: build the CUDA targets for the local card, run the CUDA tests,
# and print a short table last. Usage: scripts/gpu_check.sh [build-dir]
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/gpu}
arch=${LOOM_CUDA_ARCH:-90}
if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
log=$(mktemp -d)
status() { if [ "$1" = 0 ]; then echo pass; elif [ "$1" = 77 ]; then echo skipped; else echo "FAIL ($1)"; fi; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$log/gpu" 2>&1 || echo "no nvidia-smi" > "$log/gpu"
t0=$(date +%s)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DLOOM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
      -DLOOM_BUILD_BENCHMARKS=OFF -DLOOM_BUILD_EXAMPLES=OFF > "$log/configure" 2>&1
cmake --build "$build" -j "$(nproc)" --target test_cuda > "$log/build" 2>&1
build_rc=$?
t1=$(date +%s)
"$build/tests/test_cuda" > "$log/test" 2>&1
test_rc=$?
tail -n 30 "$log/build" "$log/test"

echo
echo "| check | result |"
echo "|---|---|"
echo "| GPU | $(cat "$log/gpu") |"
echo "| build (sm_$arch) | $(status $build_rc), $((t1 - t0)) s |"
echo "| test_cuda | $(status $test_rc): $(grep -E 'All tests passed|test cases' "$log/test" | tail -n 1) |"
[ "$build_rc" = 0 ] && [ "$test_rc" = 0 ]
