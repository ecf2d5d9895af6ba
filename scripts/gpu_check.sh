#!/usr/bin/env bash
# One call on a GPU machine: build the CUDA targets for sm_90, run the CUDA tests, time loom's
# GPU benchmarks against PyTorch's on the same card, train briefly on every loom-train preset, and
# print a short table last.
#   scripts/gpu_check.sh [--prebuilt DIR] [--no-torch] [--no-compile] [--data FILE]
# --prebuilt DIR  use test_cuda, bench_gpu and loom-train from DIR instead of building them
#                 (built elsewhere with -DLOOM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90)
# --no-torch      skip benchmarks/gpu/torch_gpu.py;  --no-compile: skip its torch.compile run
# Logs and JSON lines go to $OUT (or build/gpu-check); the table is in table.md there too.
set -uo pipefail
cd "$(dirname "$0")/.."
prebuilt="" torch=1 compile=1 data=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) prebuilt=$2; shift ;;
    --no-torch) torch=0 ;;
    --no-compile) compile=0 ;;
    --data) data=$2; shift ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
out=${OUT:-build/gpu-check}
mkdir -p "$out"
if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
t_start=$(date +%s)
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi")

# --- build -------------------------------------------------------------------------------------
if [ -n "$prebuilt" ]; then
  bin=$prebuilt
  build_note="prebuilt ($bin)"
else
  build=build/gpu
  t0=$(date +%s)
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DLOOM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DLOOM_BUILD_TESTS=ON -DLOOM_BUILD_EXAMPLES=ON -DLOOM_BUILD_BENCHMARKS=ON > "$out/configure.log" 2>&1 &&
    cmake --build "$build" -j "$(nproc)" --target test_cuda bench_gpu loom-train > "$out/build.log" 2>&1
  rc=$?
  build_note="$([ $rc = 0 ] && echo ok || echo "FAILED ($rc)"), $(( $(date +%s) - t0 )) s"
  mkdir -p "$build/bin"
  cp "$build/tests/test_cuda" "$build/benchmarks/bench_gpu" "$build/examples/loom-train" "$build/bin/" 2>/dev/null
  bin=$build/bin
  [ $rc = 0 ] || tail -n 40 "$out/build.log"
fi

# --- tests: each test case in its own process, so that a fault in one cannot hide the others ----
tests_pass=0 tests_fail=0 failed=""
if [ -x "$bin/test_cuda" ]; then
  "$bin/test_cuda" --list-test-names-only 2>/dev/null | grep -v '^$' | grep -v 'test cases' > "$out/test_names.txt"
  while IFS= read -r name; do
    name=$(echo "$name" | sed 's/^ *//')
    [ -z "$name" ] && continue
    timeout 300 "$bin/test_cuda" "$name" >> "$out/test_cuda.log" 2>&1
    rc=$?
    if [ $rc = 0 ]; then tests_pass=$((tests_pass + 1)); else tests_fail=$((tests_fail + 1)); failed="$failed; $name ($rc)"; fi
  done < "$out/test_names.txt"
  grep -E "^parity|^CUDA device|FAILED|REQUIRE|CHECK\(|with expansion|^  [^ ]|error" "$out/test_cuda.log" | head -n 150
fi

# --- benchmarks ----------------------------------------------------------------------------------
[ -x "$bin/bench_gpu" ] && timeout 400 "$bin/bench_gpu" > "$out/loom.jsonl" 2> "$out/bench_gpu.err"
cat "$out/loom.jsonl" "$out/bench_gpu.err" 2>/dev/null
if [ $torch = 1 ]; then
  flags=""
  [ $compile = 1 ] || flags="--no-compile"
  PYTHONUNBUFFERED=1 timeout 420 python3 benchmarks/gpu/torch_gpu.py $flags > "$out/torch.jsonl" 2> "$out/torch.err"
  cat "$out/torch.jsonl"; tail -n 5 "$out/torch.err"
fi

# --- loom-train --device cuda on every preset (short runs) ---------------------------------------
train_rows=""
if [ -x "$bin/loom-train" ]; then
  [ -n "$data" ] || data=$(ls ../shared/data/tinyshakespeare.txt shared/data/tinyshakespeare.txt .gpu/tinyshakespeare.txt 2>/dev/null | head -n 1)
  if [ -n "$data" ]; then
    for run in "char fp32 300" "char bf16 300" "small bf16 100" "gpt2-124m bf16 20"; do
      set -- $run
      dir="$out/train-$1-$2"
      timeout 300 "$bin/loom-train" --data "$data" --preset "$1" --device cuda --dtype "$2" --steps "$3" \
        --eval-interval "$3" --eval-iters 5 --final-eval-iters 20 --sample-tokens 100 --out "$dir" > "$dir.log" 2>&1
      rc=$?
      tail -n 3 "$dir.log"
      last=$(grep '^final step' "$dir.log" | tail -n 1)
      train_rows="$train_rows| loom-train --preset $1 --dtype $2, $3 steps | $([ $rc = 0 ] && echo "$last" || echo "FAILED ($rc): $(tail -n 1 "$dir.log")") |
"
    done
  else
    train_rows="| loom-train | skipped: no text file (pass --data FILE) |
"
  fi
fi

# --- the table -------------------------------------------------------------------------------------
{
  echo
  echo "| check | result |"
  echo "|---|---|"
  echo "| date | $(date -u +%Y-%m-%dT%H:%MZ) |"
  echo "| GPU | $gpu |"
  echo "| build (sm_90) | $build_note |"
  echo "| CUDA tests | $tests_pass test cases passed, $tests_fail failed${failed} |"
  printf "%s" "$train_rows"
  echo "| script time | $(( $(date +%s) - t_start )) s |"
  echo
  python3 benchmarks/gpu/compare_gpu.py "$out/loom.jsonl" "$out/torch.jsonl" 2>&1
} | tee "$out/table.md"
[ "$tests_fail" = 0 ] && [ "$tests_pass" -gt 0 ]
