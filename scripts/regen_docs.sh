#!/usr/bin/env bash
# Regenerates the shell transcripts in docs/ by running the commands the pages show.
#
#   scripts/regen_docs.sh [BUILD_DIR [PART...]]
#
# BUILD_DIR (default build/release) holds the built examples; PART is train (docs/07: needs
# loom-train and loom-sample) or bpe (docs/06: needs loom-bpe), both by default.
#
# A transcript lives between two marker lines in a page:
#   <!-- regen: NAME (scripts/regen_docs.sh) -->
#   ... replaced by this script ...
#   <!-- /regen -->
# Everything else in the page is left alone. The runs are deterministic (seeded, and the losses do
# not depend on the thread count), so only tokens/s and times change from machine to machine.
#
# docs/07-train-a-tiny-gpt.md:
#   train-char   loom-train --data jargon.txt --preset char --steps 2000 --out out (an excerpt)
#   sample-char  loom-sample --ckpt out/ckpt.safetensors --prompt "hacker" --tokens 300 ...
# The Jargon File comes from Debian's jargon-text package (/usr/share/doc/jargon-text).
# docs/06-bpe-tokenizer.md, when TINYSHAKESPEARE names tinyshakespeare.txt (not in the repository):
#   bpe          loom-bpe train / encode / decode
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-build/release}"
case "$build" in /*) ;; *) build="$root/$build" ;; esac
parts="${*:2}"
parts="${parts:-train bpe}"
want() { [[ " $parts " == *" $1 "* ]]; }
need() {
  for exe in "$@"; do
    [[ -x "$build/examples/$exe" ]] || { echo "regen_docs: $build/examples/$exe not found; build it first" >&2; exit 1; }
  done
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

# replace_region PAGE NAME FILE: puts FILE's lines between the markers of region NAME in PAGE.
replace_region() {
  local page="$1" name="$2" body="$3"
  grep -q "^<!-- regen: $name " "$page" || { echo "regen_docs: no region '$name' in $page" >&2; exit 1; }
  awk -v name="$name" -v body="$body" '
    $0 ~ "^<!-- regen: " name " " { print; while ((getline line < body) > 0) print line; skip = 1; next }
    skip && /^<!-- \/regen -->/ { skip = 0 }
    !skip { print }' "$page" > "$page.tmp"
  mv "$page.tmp" "$page"
}

# --- docs/07: train the char model on the Jargon File, then sample ----------------------------------
if want train; then
need loom-train loom-sample
jargon=/usr/share/doc/jargon-text/jargon.txt.gz
[[ -f "$jargon" ]] || { echo "regen_docs: $jargon not found: apt-get install jargon-text" >&2; exit 1; }
zcat "$jargon" > jargon.txt
train_args=(--data jargon.txt --preset char --steps 2000 --out out)
echo "regen_docs: loom-train ${train_args[*]}" >&2
# stdout line-buffered, so that its lines and the progress lines on stderr keep their order
stdbuf -oL "$build/examples/loom-train" "${train_args[@]}" > train.log 2>&1
{
  echo '```text'
  echo "\$ ./build/demo/examples/loom-train ${train_args[*]}"
  # The start, the first progress lines, every evaluation, and the end: the lines in between are
  # more progress lines, one every 10 steps.
  grep -E '^(data|model):|^step (1|10|20)/|^step [0-9]+: train loss|^final evaluation|^final step' train.log \
    | awk '/^step 20\// { print; print "..."; next } { print }'
  echo '```'
} > train.md
replace_region "$root/docs/07-train-a-tiny-gpt.md" train-char train.md

sample_args=(--ckpt out/ckpt.safetensors --prompt hacker --tokens 300 --temperature 0.8 --top-k 40)
echo "regen_docs: loom-sample ${sample_args[*]}" >&2
"$build/examples/loom-sample" "${sample_args[@]}" > sample.log 2>&1
{
  echo '```text'
  echo "\$ ./build/demo/examples/loom-sample ${sample_args[*]}"
  cat sample.log
  echo '```'
} > sample.md
replace_region "$root/docs/07-train-a-tiny-gpt.md" sample-char sample.md
echo "regen_docs: docs/07-train-a-tiny-gpt.md updated" >&2
fi

# --- docs/06: loom-bpe on tinyshakespeare -----------------------------------------------------------
if want bpe && [[ -z "${TINYSHAKESPEARE:-}" ]]; then
  echo "regen_docs: TINYSHAKESPEARE not set: docs/06-bpe-tokenizer.md left as it is" >&2
elif want bpe; then
need loom-bpe
cp "$TINYSHAKESPEARE" tinyshakespeare.txt
ln -s "$root/tests" tests  # the page's commands run from the repository root
bpe="$build/examples/loom-bpe"
{
  echo '```text'
  echo "\$ loom-bpe train --input tinyshakespeare.txt --vocab-size 4096 --special '<|endoftext|>' --out shakespeare.loom"
  "$bpe" train --input tinyshakespeare.txt --vocab-size 4096 --special '<|endoftext|>' --out shakespeare.loom \
    > bpe-train.log 2>&1
  # the bar is redrawn in place with carriage returns: keep its last state, then the summary
  tr '\r' '\n' < bpe-train.log | grep '^training BPE' | tail -n 1
  tr '\r' '\n' < bpe-train.log | grep -v '^training BPE' | grep -v '^$'
  echo '$ echo "hello world" | loom-bpe encode --gpt2 tests/data/tokenizer'
  echo "hello world" | "$bpe" encode --gpt2 tests/data/tokenizer
  echo '$ echo "31373 995" | loom-bpe decode --gpt2 tests/data/tokenizer'
  echo "31373 995" | "$bpe" decode --gpt2 tests/data/tokenizer
  echo  # decode writes the text as it is, without a newline
  echo '$ loom-bpe encode --model shakespeare.loom --input tinyshakespeare.txt --format u16 --output train.bin'
  "$bpe" encode --model shakespeare.loom --input tinyshakespeare.txt --format u16 --output train.bin
  echo '```'
} > bpe.md
replace_region "$root/docs/06-bpe-tokenizer.md" bpe bpe.md
echo "regen_docs: docs/06-bpe-tokenizer.md updated" >&2
fi
