#!/usr/bin/env bash
# The fine-tuning demonstration, end to end on the CPU, with the figures docs/19-fine-tuning.md
# reports:
#   1. generate the data (scripts/make_sft_data.py: arithmetic and word reversal, seeded)
#   2. fine-tune a fresh model on the 2-digit additions of train_add2.jsonl; exact match on the
#      held-out test_add2.jsonl
#   3. packing: the mixed conversations of train.jsonl packed and unpacked, tokens/s side by side
#   4. pretrain a wider model (C 256) on pretrain.txt, then full fine-tuning vs LoRA rank 8 on it
#   5. loom-train vs loom-finetune tokens/s on the same model and batch
#
#   scripts/sft_demo.sh [--build DIR] [--out DIR] [--quick] [--lora-device cpu|cuda] [--only "1 3 4 5"]
# --quick runs every step with a tenth of the steps (a smoke test, not the reported figures).
# --lora-device runs step 4 on the GPU (the others measure the CPU); --only "1 3" runs those steps.
set -euo pipefail
build=build/release
out=${TMPDIR:-/tmp}/loom-sft-demo
scale=1
lora_device=cpu
only="1 3 4 5"
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --quick) scale=10; shift ;;
    --lora-device) lora_device="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--out DIR] [--quick]" >&2; exit 2 ;;
  esac
done
bin="$build/examples"
for p in loom-finetune loom-eval loom-train; do
  [ -x "$bin/$p" ] || { echo "no $bin/$p: build it first (cmake --build --preset release --target $p)" >&2; exit 1; }
done
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$out"
data="$out/data"
[ -f "$data/train.jsonl" ] || python3 "$here/make_sft_data.py" "$data" > /dev/null
steps() { echo $(( $1 / scale )); }
want() { [[ " $only " == *" $1 "* ]]; }
final() { grep '^final' "$1" | tail -1; }
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<< "$1"; }

if want 1; then
echo "== 1. fine-tune a fresh char-preset model (4 layers, C 128, bytes + chat tokens) on 2-digit additions"
t0=$(date +%s)
"$bin/loom-finetune" --preset char --block-size 48 --data "$data/train_add2.jsonl" --steps "$(steps 2500)" \
  --batch-size 48 --lr 3e-3 --warmup 100 --eval-interval 100000 --out "$out/scratch" > "$out/scratch.log" 2>&1
t1=$(date +%s)
"$bin/loom-eval" --ckpt "$out/scratch/ckpt.safetensors" --data "$data/test_add2.jsonl" --max-answer 6 > "$out/scratch_eval.log"
ft=$(final "$out/scratch.log"); ev=$(grep '^eval' "$out/scratch_eval.log")
echo "   $ft"
echo "   held-out 2-digit additions: $ev (fine-tuning took $((t1 - t0)) s)"

fi
if want 3; then
echo "== 3. packing: the mixed conversations of train.jsonl, the same model and batch (16 rows of 128) for 200 steps, packed and unpacked"
for pack in 1 0; do
  "$bin/loom-finetune" --preset char --block-size 128 --data "$data/train.jsonl" --steps "$(steps 200)" \
    --batch-size 16 --pack $pack --eval-interval 100000 --out "$out/pack$pack" > "$out/pack$pack.log" 2>&1
done
p1=$(field "$(final "$out/pack1.log")" tokens_per_s); p0=$(field "$(final "$out/pack0.log")" tokens_per_s)
echo "   tokens/s (example tokens, padding not counted): packed $p1, unpacked $p0, ratio $(python3 -c "print(f'{$p1/$p0:.2f}')")"

fi
if want 4; then
echo "== 4. pretrain a wider model (4 layers, C 256) on pretrain.txt, then full fine-tuning vs LoRA rank 8 ($lora_device)"
"$bin/loom-train" --data "$data/pretrain.txt" --tokenizer bytes --preset char --n-embd 256 --n-head 4 \
  --block-size 48 --batch-size 48 --steps "$(steps 2000)" --lr 2e-3 --eval-interval 1000 --sample-tokens 0 \
  --device "$lora_device" --out "$out/pre" > "$out/pre.log" 2>&1
echo "   $(final "$out/pre.log")"
"$bin/loom-finetune" --init "$out/pre/ckpt.safetensors" --data "$data/train_add2.jsonl" --steps "$(steps 2500)" \
  --batch-size 48 --lr 1e-3 --warmup 100 --eval-interval 100000 --device "$lora_device" --out "$out/full" > "$out/full.log" 2>&1
"$bin/loom-finetune" --init "$out/pre/ckpt.safetensors" --data "$data/train_add2.jsonl" --steps "$(steps 2500)" \
  --batch-size 48 --lr 3e-3 --warmup 100 --lora 8 --lora-alpha 16 --eval-interval 100000 --device "$lora_device" \
  --out "$out/lora" > "$out/lora.log" 2>&1
for run in full lora; do
  "$bin/loom-eval" --ckpt "$out/$run/ckpt.safetensors" --data "$data/test_add2.jsonl" --max-answer 6 > "$out/${run}_eval.log"
  echo "   $run: $(final "$out/$run.log") | $(grep '^eval' "$out/${run}_eval.log")"
done
model_bytes=$(stat -c %s "$out/full/ckpt.safetensors")
adapter_bytes=$(stat -c %s "$out/lora/adapter_model.safetensors")
params=$(sed -n 's/.*, \([0-9]*\) parameters (.*/\1/p' "$out/full.log" | head -1)
echo "   adapter: $adapter_bytes bytes = $(python3 -c "print(f'{100*$adapter_bytes/($params*4):.2f}')")% of the model's $params float32 parameters"

fi
if want 5; then
echo "== 5. loom-train vs loom-finetune speed on the same model and batch (16 rows of 128)"
"$bin/loom-train" --data "$data/pretrain.txt" --tokenizer bytes --preset char --block-size 128 --batch-size 16 \
  --steps "$(steps 200)" --eval-interval 100000 --sample-tokens 0 --final-eval-iters 1 --out "$out/speed" > "$out/speed.log" 2>&1
echo "   loom-train tokens/s: $(field "$(final "$out/speed.log")" tokens_per_s); loom-finetune packed: $p1"
fi
echo "final exact_match_add2=$(field "${ev:-}" exact_match) pack_ratio=$( [ -n "${p0:-}" ] && python3 -c "print(f'{$p1/$p0:.2f}')") seconds=$(( ${t1:-0} - ${t0:-0} ))"
