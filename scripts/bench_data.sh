#!/usr/bin/env bash
# Throughput of loom-data on a real corpus built from the text Debian ships, one thread, median of
# three runs per configuration; then peak memory on a generated 1 GB corpus (--big).
#
#   scripts/bench_data.sh [--build DIR] [--big] [--gpt2 DIR]
#
# The corpus (written to $TMPDIR/loom-debian-corpus): every /usr/share/doc/*/copyright file (one
# document each: many are copies or near-copies of the same licences), the packages' changelogs
# (gzip, read as they are), /usr/share/common-licenses and the Jargon File (jargon-text).
# Prints a table of MB/s per stage and the final key=value line.
set -euo pipefail
build=build/release
big=0
gpt2=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --big) big=1; shift ;;
    --gpt2) gpt2="$2"; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--big] [--gpt2 DIR]" >&2; exit 2 ;;
  esac
done
exe="$build/examples/loom-data"
[ -x "$exe" ] || { echo "no $exe: build it first (cmake --build --preset release --target loom-data)" >&2; exit 1; }
tmp="${TMPDIR:-/tmp}"
corpus="$tmp/loom-debian-corpus"
if [ ! -d "$corpus" ]; then
  mkdir -p "$corpus/copyright" "$corpus/changelogs" "$corpus/licenses"
  for f in /usr/share/doc/*/copyright; do
    [ -f "$f" ] && cp "$f" "$corpus/copyright/$(basename "$(dirname "$f")").txt"
  done
  for f in /usr/share/doc/*/changelog*.gz; do
    [ -f "$f" ] && cp "$f" "$corpus/changelogs/$(basename "$(dirname "$f")")-$(basename "$f" .gz).txt.gz"
  done
  cp /usr/share/common-licenses/* "$corpus/licenses/" 2>/dev/null || true
  [ -f /usr/share/doc/jargon-text/jargon.txt.gz ] && cp /usr/share/doc/jargon-text/jargon.txt.gz "$corpus/jargon.txt.gz"
fi
echo "corpus: $corpus ($(find "$corpus" -type f | wc -l) files, $(du -sh "$corpus" | cut -f1) on disk)"

# median of three runs of one configuration: prints "<scan MB/s> <whole MB/s> <bytes in> <seconds>"
run3() {
  local out="$tmp/loom-bench-out" vals=()
  for i in 1 2 3; do
    "$exe" run --input "$corpus" --out "$out" --threads 1 --fresh --quiet "$@" > /dev/null
    vals+=("$(python3 - "$out/report.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
t = r["timing"]; b = r["input"]["bytes_in"]
whole = t["scan_s"] + t["neardup_s"] + t["split_s"] + t["shards_s"]
print(f'{b / 1e6 / t["scan_s"]:.2f} {b / 1e6 / whole:.2f} {b} {whole:.2f} {r["peak_rss_bytes"] / 1e6:.0f}')
EOF
)")
  done
  printf '%s\n' "${vals[@]}" | sort -n -k2 | sed -n 2p
}

echo "configuration                                   scan MB/s  whole MB/s  MB in  seconds  peak MB"
row() { printf '%-46s %10s %11s %6.1f %8s %8s\n' "$1" "$2" "$3" "$(echo "$4 / 1000000" | bc -l)" "$5" "$6"; }
read -r s1 w1 b1 t1 m1 <<< "$(run3 --dedup exact --decontaminate 0)"
row "read+normalise+filters+PII+exact dedup" "$s1" "$w1" "$b1" "$t1" "$m1"
read -r s2 w2 b2 t2 m2 <<< "$(run3)"
row "whole run (defaults, byte-level tokens)" "$s2" "$w2" "$b2" "$t2" "$m2"
read -r s4 w4 b4 t4 m4 <<< "$(run3 --quality none)"
row "whole run, no quality rules (all text kept)" "$s4" "$w4" "$b4" "$t4" "$m4"
if [ -n "$gpt2" ]; then
  read -r s3 w3 b3 t3 m3 <<< "$(run3 --quality none --tokenizer "gpt2:$gpt2")"
  row "whole run, no quality rules, GPT-2 tokens" "$s3" "$w3" "$b3" "$t3" "$m3"
fi
echo
echo "each stage alone over every document (bench_data, one core, median of 3):"
OMP_NUM_THREADS=1 "$build/benchmarks/bench_data" "$corpus" ${gpt2:+--gpt2 "$gpt2"} | tee "$tmp/loom-bench-stages.log"
minhash=$(sed -n 's/.* minhash=\([^ ]*\).*/\1/p' "$tmp/loom-bench-stages.log")
s1=$(sed -n 's/.* chain=\([^ ]*\).*/\1/p' "$tmp/loom-bench-stages.log")
python3 - "$tmp/loom-bench-out/report.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("dropped:", ", ".join(f"{k} {v}" for k, v in r["dropped"].items()))
print("pii:", ", ".join(f"{k} {v}" for k, v in r["pii"].items()))
print("kept:", ", ".join(f'{k} {v["documents"]} docs / {v["tokens"]} tokens' for k, v in r["kept"].items()))
EOF

if [ "$big" = 1 ]; then
  bigdir="$tmp/loom-big-corpus"
  if [ ! -d "$bigdir" ]; then
    mkdir -p "$bigdir"
    python3 - "$bigdir" <<'EOF'
import json, random, sys
# 1 GB of JSONL: 40 files of ~25 MB, documents of ~2 KB of word salad with planted copies.
rng = random.Random(1)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(20000)]
stop = ["the", "be", "to", "of", "and", "that", "have", "with", "a", "in"]
def doc():
    paras = []
    for _ in range(rng.randint(3, 5)):
        sents = []
        for _ in range(rng.randint(3, 6)):
            s = " ".join(rng.choice(stop) if rng.random() < 0.3 else rng.choice(words) for _ in range(rng.randint(8, 14)))
            sents.append(s[0].upper() + s[1:] + ".")
        paras.append(" ".join(sents))
    return "\n".join(paras)
n = 0
for f in range(40):
    with open(f"{sys.argv[1]}/part{f:02d}.jsonl", "w") as out:
        size, prev = 0, None
        while size < 25_000_000:
            t = prev if prev is not None and rng.random() < 0.05 else doc()
            prev = t
            line = json.dumps({"id": f"d{n}", "text": t}) + "\n"
            out.write(line); size += len(line); n += 1
EOF
  fi
  /usr/bin/time -v "$exe" run --input "$bigdir" --out "$tmp/loom-big-out" --fresh --quiet > "$tmp/loom-big.log" 2> "$tmp/loom-big.time"
  grep "^final" "$tmp/loom-big.log"
  echo "1 GB corpus: $(grep 'Maximum resident' "$tmp/loom-big.time" | awk '{print $NF/1024 " MB peak"}'), $(grep 'Elapsed' "$tmp/loom-big.time" | awk '{print $NF}') wall"
fi
echo "final read_filter_dedup_mb_per_s=$s1 minhash_mb_per_s=$minhash whole_mb_per_s=$w2 whole_all_kept_mb_per_s=$w4"
