#!/usr/bin/env bash
# One call on a GPU machine: build the CUDA targets for sm_90, run the CUDA tests and the NCCL
# communicator's (one rank: one GPU holds one NCCL rank, so no 2-rank run here), time loom's
# GPU benchmarks against PyTorch's on the same card, train briefly on every loom-train preset, and
# print a short table last.
#   scripts/gpu_check.sh [--prebuilt DIR] [--no-torch] [--no-compile] [--data FILE] [--train RUNS]
#                        [--ab OTHER_BENCH_GPU] [--batches 16,64] [--vocabs 50257,50304] [--steps 10]
#                        [--recompute-batches 64,128] [--peak-tflops 989]
# --prebuilt DIR  use test_cuda, test_nccl, bench_gpu and loom-train from DIR instead of building them
#                 (built elsewhere with -DLOOM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90)
# --no-torch      skip benchmarks/gpu/torch_gpu.py;  --no-compile: skip its torch.compile run
# --train RUNS    the loom-train runs, "preset dtype steps" separated by commas
#                 (default "char fp32 300,char bf16 300,small bf16 100,gpt2-124m bf16 20")
# --ab BIN        also time the GPT-2 step with another build's bench_gpu (e.g. the commit
#                 before a refactor), alternating the two three times on the same card
# --batches LIST, --vocabs LIST
#                 the GPT-2 124M step's batch sizes and vocabularies (comma lists, defaults "16,64" and
#                 "50257,50304"), passed to bench_gpu and torch_gpu.py: every (vocabulary, batch) pair
#                 runs bf16 (loom, torch eager, torch.compile), the first pair also fp32. GPU time: each
#                 pair costs roughly one torch.compile (~1 min) plus a few seconds per eager run, so the
#                 default 4 pairs add ~4 min to the torch side; --no-compile, or one pair
#                 (--batches 16 --vocabs 50257, the benchmarks' own default), keeps it short.
#                 The benchmarks' time limits grow with the number of pairs.
# --steps N       timed GPT-2 steps per run for both benchmarks (default 10; fp32 runs half)
# --recompute-batches LIST
#                 loom's bf16 GPT-2 step again at these batches (first vocabulary) with each block recomputed
#                 in backward (default "64,128"; "none" for no such run): time and peak memory against the
#                 run without, a table of its own; a few seconds each
# --peak-tflops X the GPU's dense bf16 peak, the denominator of the MFU column (default 989: H100/H200 SXM)
# Logs and JSON lines go to $OUT (or build/gpu-check); the table is in table.md there too.
set -uo pipefail
cd "$(dirname "$0")/.."
prebuilt="" torch=1 compile=1 data="" ab="" batches="16,64" vocabs="50257,50304" steps=10 peak_tflops=989
recompute_batches="64,128"
train_runs="char fp32 300,char bf16 300,small bf16 100,gpt2-124m bf16 20"
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) prebuilt=$2; shift ;;
    --no-torch) torch=0 ;;
    --no-compile) compile=0 ;;
    --data) data=$2; shift ;;
    --train) train_runs=$2; shift ;;
    --ab) ab=$2; shift ;;
    --batches) batches=$2; shift ;;
    --vocabs) vocabs=$2; shift ;;
    --steps) steps=$2; shift ;;
    --peak-tflops) peak_tflops=$2; shift ;;
    --recompute-batches) recompute_batches=$2; shift ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
# Check the benchmark options here, before minutes of building, rather than when the benchmarks start.
list_re='^[1-9][0-9]*(,[1-9][0-9]*)*$'
[[ $batches =~ $list_re ]] || { echo "gpu_check.sh: --batches: malformed value '$batches' (e.g. 16,64)" >&2; exit 2; }
[[ $vocabs =~ $list_re ]] || { echo "gpu_check.sh: --vocabs: malformed value '$vocabs' (e.g. 50257)" >&2; exit 2; }
[[ $recompute_batches == none || $recompute_batches =~ $list_re ]] ||
  { echo "gpu_check.sh: --recompute-batches: malformed value '$recompute_batches' (e.g. 64,128, or none)" >&2; exit 2; }
[[ $steps =~ ^[1-9][0-9]*$ ]] || { echo "gpu_check.sh: --steps: malformed value '$steps'" >&2; exit 2; }
[[ $peak_tflops =~ ^[0-9]+(\.[0-9]+)?$ && ! $peak_tflops =~ ^0+(\.0+)?$ ]] ||
  { echo "gpu_check.sh: --peak-tflops: malformed value '$peak_tflops'" >&2; exit 2; }
IFS=',' read -r -a batch_list <<< "$batches"
IFS=',' read -r -a vocab_list <<< "$vocabs"
npairs=$(( ${#batch_list[@]} * ${#vocab_list[@]} ))
gpt_flags=(--batches "$batches" --vocabs "$vocabs" --steps "$steps" --peak-tflops "$peak_tflops")
loom_flags=("${gpt_flags[@]}")
nrecompute=0
if [ "$recompute_batches" != none ]; then
  loom_flags+=(--recompute-batches "$recompute_batches")
  nrecompute=$(( $(tr -cd ',' <<< "$recompute_batches" | wc -c) + 1 ))
fi
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
  # test_nccl exists only where CMake found NCCL (nccl.h, libnccl.so).
  if grep -q "NCCL=ON" "$out/configure.log"; then
    cmake --build "$build" -j "$(nproc)" --target test_nccl >> "$out/build.log" 2>&1 || rc=$?
  fi
  build_note="$([ $rc = 0 ] && echo ok || echo "FAILED ($rc)"), $(( $(date +%s) - t0 )) s"
  mkdir -p "$build/bin"
  cp "$build/tests/test_cuda" "$build/tests/test_nccl" "$build/benchmarks/bench_gpu" "$build/examples/loom-train" \
     "$build/bin/" 2>/dev/null
  bin=$build/bin
  [ $rc = 0 ] || tail -n 40 "$out/build.log"
fi

# --- tests: each test case in its own process, so that a fault in one cannot hide the others ----
tests_pass=0 tests_fail=0 failed=""
if [ -x "$bin/test_cuda" ]; then
  "$bin/test_cuda" --list-test-names-only 2>/dev/null | grep -v '^$' | grep -v 'test cases' | grep -v '^CUDA device' > "$out/test_names.txt"
  while IFS= read -r name; do
    name=$(echo "$name" | sed 's/^ *//')
    [ -z "$name" ] && continue
    # (Catch2 reads a comma in a name as "or": escape it, and count a name that matched nothing as failed)
    timeout 300 "$bin/test_cuda" "${name//,/\\,}" > "$out/one_test.log" 2>&1
    rc=$?
    cat "$out/one_test.log" >> "$out/test_cuda.log"
    grep -q "No test cases matched" "$out/one_test.log" && rc=99
    if [ $rc = 0 ]; then tests_pass=$((tests_pass + 1)); else tests_fail=$((tests_fail + 1)); failed="$failed; $name ($rc)"; fi
  done < "$out/test_names.txt"
  grep -E "^parity|^CUDA device|FAILED|REQUIRE|CHECK\(|with expansion|^  [^ ]|error" "$out/test_cuda.log" | head -n 150
fi

# --- the NCCL communicator, one rank on GPU 0 (tests/cuda/test_nccl.cpp) -------------------------
nccl_note="not built (CMake found no NCCL)"
if [ -x "$bin/test_nccl" ]; then
  timeout 300 "$bin/test_nccl" > "$out/test_nccl.log" 2>&1
  rc=$?
  tail -n 20 "$out/test_nccl.log"
  case $rc in
    0) nccl_note="passed: $(grep -E "^All tests passed" "$out/test_nccl.log" | head -n 1)" ;;
    77) nccl_note="skipped: no GPU" ;;
    *) nccl_note="FAILED ($rc)"; tests_fail=$((tests_fail + 1)); failed="$failed; test_nccl ($rc)" ;;
  esac
fi

# --- benchmarks ----------------------------------------------------------------------------------
# Time limits: 400 s and 420 s for one (vocabulary, batch) pair as before, plus 40 s (loom) and 90 s (torch,
# one torch.compile) for each further pair, and 40 s for each of loom's recomputed runs.
[ -x "$bin/bench_gpu" ] && timeout $(( 360 + 40 * npairs + 40 * nrecompute )) "$bin/bench_gpu" "${loom_flags[@]}" \
  > "$out/loom.jsonl" 2> "$out/bench_gpu.err"
cat "$out/loom.jsonl" "$out/bench_gpu.err" 2>/dev/null
if [ $torch = 1 ]; then
  flags=""
  [ $compile = 1 ] || flags="--no-compile"
  PYTHONUNBUFFERED=1 timeout $(( 330 + 90 * npairs )) python3 benchmarks/gpu/torch_gpu.py $flags "${gpt_flags[@]}" \
    > "$out/torch.jsonl" 2> "$out/torch.err"
  cat "$out/torch.jsonl"; tail -n 5 "$out/torch.err"
fi

# --- loom-train --device cuda on every preset (short runs) ---------------------------------------
train_rows=""
if [ -x "$bin/loom-train" ]; then
  [ -n "$data" ] || data=$(ls ../shared/data/tinyshakespeare.txt shared/data/tinyshakespeare.txt .gpu/tinyshakespeare.txt 2>/dev/null | head -n 1)
  if [ -n "$data" ]; then
    IFS=',' read -r -a runs <<< "$train_runs"
    for run in "${runs[@]}"; do
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
    # Two MPI ranks whose tensors live on the one GPU (gradients summed through host buffers),
    # against one process with two micro-batches: the losses agree within float rounding.
    if command -v mpirun > /dev/null; then
      dp="$out/train-dp"
      common=(--data "$data" --preset char --device cuda --steps 20 --eval-interval 20 --eval-iters 2
              --final-eval-iters 5 --sample-tokens 0)
      timeout 200 "$bin/loom-train" "${common[@]}" --grad-accum 2 --out "$dp-1" > "$dp-1.log" 2>&1
      OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 200 mpirun -np 2 --oversubscribe \
        "$bin/loom-train" "${common[@]}" --out "$dp-2" > "$dp-2.log" 2>&1
      rc=$?
      one=$(grep '^final step' "$dp-1.log" | tail -n 1); two=$(grep '^final step' "$dp-2.log" | tail -n 1)
      train_rows="$train_rows| MPI, 2 ranks on the GPU vs 1 rank x 2 micro-batches | $([ $rc = 0 ] && echo "$two / $one" || echo "FAILED ($rc): $(tail -n 1 "$dp-2.log")") |
"
    fi
  else
    train_rows="| loom-train | skipped: no text file (pass --data FILE) |
"
  fi
fi

# --- A/B: this build's GPT-2 step against another build's, alternating on the same card ----------
ab_rows=""
if [ -n "$ab" ] && [ -x "$ab" ] && [ -x "$bin/bench_gpu" ]; then
  for i in 1 2 3; do
    for side in this other; do
      b=$bin/bench_gpu
      [ $side = other ] && b=$ab
      timeout 120 "$b" --only gpt2_step --steps 10 2>> "$out/ab.err" | sed "s/^/$side /" >> "$out/ab.jsonl"
    done
  done
  ab_rows=$(python3 - "$out/ab.jsonl" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    side, _, js = line.partition(" ")
    try:
        r = json.loads(js)
    except ValueError:
        continue
    if "ms" in r:
        rows.setdefault((r["dtype"], side), []).append(r["ms"])
for dtype in sorted({d for d, _ in rows}):
    a, b = rows.get((dtype, "this"), []), rows.get((dtype, "other"), [])
    if a and b:
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| GPT-2 step {dtype}, median of {len(a)} | this build {ma:.2f} ms, other {mb:.2f} ms: {mb / ma:.3f}x |")
PY
)
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
  echo "| NCCL communicator, 1 rank | $nccl_note |"
  printf "%s" "$train_rows"
  [ -n "$ab_rows" ] && echo "$ab_rows"
  echo "| script time | $(( $(date +%s) - t_start )) s |"
  echo
  python3 benchmarks/gpu/compare_gpu.py "$out/loom.jsonl" "$out/torch.jsonl" 2>&1
} | tee "$out/table.md"
[ "$tests_fail" = 0 ] && [ "$tests_pass" -gt 0 ]
