#!/usr/bin/env bash
# GPT-2 against Llama at the same shape and parameter count, the table docs/23-architectures.md
# reports: loom-train's char preset (4 layers, 4 heads, C 128, T 64, B 12, 2000 steps) with
# --arch gpt2 and --arch llama, three seeds each, on two corpora:
#   shakespeare  tiny Shakespeare, one token per character (vocabulary 65)
#   jargon       the Jargon File (Debian's jargon-text), a 1024-token byte-level BPE trained on it
# Each run's final line gives the validation loss (200 batches) and tokens/s; the summary prints
# mean and spread per corpus and architecture, and the mean tokens/s ratio.
#
#   scripts/compare_archs.sh [--build DIR] [--out DIR] [--steps N] [--seeds "1 2 3"] [--threads N]
set -euo pipefail
build=build/release
out=${TMPDIR:-/tmp}/loom-archs
steps=2000
seeds="1 2 3"
threads=2
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--out DIR] [--steps N] [--seeds \"1 2 3\"] [--threads N]" >&2; exit 2 ;;
  esac
done
bin="$build/examples"
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
shakespeare="$here/../shared/data/tinyshakespeare.txt"
[ -f "$shakespeare" ] || shakespeare="${SHAKESPEARE:?set SHAKESPEARE to tinyshakespeare.txt}"
zcat /usr/share/doc/jargon-text/jargon.txt.gz > "$out/jargon.txt"
[ -f "$out/jargon.bpe" ] || "$bin/loom-bpe" train --input "$out/jargon.txt" --vocab-size 1024 --out "$out/jargon.bpe" --quiet

results="$out/results.txt"
: > "$results"
for corpus in shakespeare jargon; do
  for arch in gpt2 llama; do
    for seed in $seeds; do
      if [ "$corpus" = shakespeare ]; then data=(--data "$shakespeare"); else data=(--data "$out/jargon.txt" --tokenizer "$out/jargon.bpe"); fi
      run="$out/$corpus-$arch-$seed"
      line=$("$bin/loom-train" "${data[@]}" --preset char --arch "$arch" --seed "$seed" --steps "$steps" \
               --threads "$threads" --sample-tokens 0 --out "$run" 2>/dev/null | tail -1)
      echo "corpus=$corpus seed=$seed $line" | tee -a "$results"
    done
  done
done

python3 - "$results" <<'EOF'
import statistics, sys
rows = [dict(kv.split("=", 1) for kv in line.split() if "=" in kv) for line in open(sys.argv[1])]
print("\n| corpus | arch | parameters | val loss (mean ± sd of 3 seeds) | each seed | tokens/s |")
print("|---|---|---|---|---|---|")
speed = {}
for corpus in ("shakespeare", "jargon"):
    for arch in ("gpt2", "llama"):
        rs = [r for r in rows if r["corpus"] == corpus and r["arch"] == arch]
        if not rs:
            continue
        v = [float(r["val_loss"]) for r in rs]
        t = statistics.median(float(r["tokens_per_s"]) for r in rs)
        speed[(corpus, arch)] = t
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"| {corpus} | {arch} | {int(rs[0]['parameters']):,} | {statistics.mean(v):.4f} ± {sd:.4f} | "
              f"{' '.join(f'{x:.4f}' for x in v)} | {t:,.0f} |")
for corpus in ("shakespeare", "jargon"):
    if (corpus, "gpt2") in speed and (corpus, "llama") in speed:
        print(f"{corpus}: llama tokens/s / gpt2 tokens/s = {speed[(corpus, 'llama')] / speed[(corpus, 'gpt2')]:.3f}")
EOF
