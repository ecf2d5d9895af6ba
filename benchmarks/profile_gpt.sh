#!/usr/bin/env bash
# Where one training step's time goes: perf samples of bench_gpt, grouped by the kind of work.
#   benchmarks/profile_gpt.sh [build-dir] [config: A|B|C] [steps] [arch]   (needs linux-perf)
# Prints one line per group (share of the samples) and a final key=value line.
set -euo pipefail
usage="usage: benchmarks/profile_gpt.sh [build-dir] [config: A|B|C] [steps] [arch: gpt2|llama]"
case "${1:-}" in -h | --help) echo "$usage"; exit 0 ;; esac
build=${1:-build/release}
config=${2:-A}
steps=${3:-100}
arch=${4:-gpt2}
bench="$build/benchmarks/bench_gpt"
fail() { echo "profile_gpt.sh: $*" >&2; echo "$usage" >&2; exit 2; }
[ -x "$bench" ] || fail "no $bench: build the benchmarks there first (cmake --build --preset release)"
case "$config" in A | B | C) ;; *) fail "config must be A, B or C, got '$config'" ;; esac
[[ "$steps" =~ ^[1-9][0-9]*$ ]] || fail "steps must be a positive integer, got '$steps'"
command -v perf > /dev/null || fail "perf is not installed (Debian: apt-get install linux-perf)"
data=$(mktemp)
log=$(mktemp)
trap 'rm -f "$data" "$log"' EXIT
# bench_gpt's own errors (a bad arch, say) are shown; its table is not
if ! perf record -q -o "$data" "$bench" --config "$config" --steps "$steps" --arch "$arch" > /dev/null 2> "$log"; then
  cat "$log" >&2
  fail "bench_gpt failed (above)"
fi
perf report -i "$data" --no-children --sort dso,symbol -g none --stdio 2>/dev/null | python3 -c '
import re, sys
groups = [  # first match wins
    ("gemm", r"sgemm|micro_kernel|edge_kernel|pack_a|pack_b|gebp|gemm_pack|general_matrix_matrix|gemv"),
    ("attention", r"attention_forward|attention_backward|tile_product|tile_rows|transpose_head|mask_future|mask_past"),
    ("optimizer", r"adam|scale_grads|sum_of_squares|clip_grad|for_each_with_grad"),
    ("elementwise, norms, loss", r"Gelu|Silu|swiglu|map_binary|map_unary|grad_map|layer_norm|rms_norm|softmax|cross_entropy|embedding|rope|copy_strided|fill_|strided_for|expf|logf|tanh|reduce|sum_"),
    ("threads waiting (OpenMP)", r"libgomp"),
    ("kernel, allocation", r"\[kernel|malloc|free|memset|memmove|memcpy|_int_"),
]
share = {g: 0.0 for g, _ in groups}
share["other"] = 0.0
for line in sys.stdin:
    m = re.match(r"\s*([0-9.]+)%\s+(.*)", line)
    if not m:
        continue
    pct, rest = float(m.group(1)), m.group(2)
    for g, rx in groups:
        if re.search(rx, rest):
            share[g] += pct
            break
    else:
        share["other"] += pct
for g, v in share.items():
    print(f"{g:28s} {v:5.1f}%")
keys = [g.split()[0].rstrip(",") for g in share]
print(" ".join(f"{k}={v:.1f}" for k, v in zip(keys, share.values())))
'
