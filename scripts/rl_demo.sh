#!/usr/bin/env bash
# The whole life of a small model on the CPU, from raw text to learning from feedback, with the
# figures docs/20-learning-from-feedback.md and the README report:
#   1. data      scripts/make_rl_data.py writes seeded arithmetic: raw text, conversations,
#                preference pairs and prompts with answers (3-digit sums held out)
#   2. loom-data the raw text (one JSONL document per 40 facts) -> clean, deduplicated shards
#   3. loom-train pretrain a 4-layer model (C 128, bytes) on the shards
#   4. loom-finetune supervised fine-tuning on the conversations
#   5. loom-rl rm   a reward model on the pairs: held-out preference accuracy
#   6. loom-rl dpo  DPO on the pairs, with the SFT term and without: margin and held-out exact match
#   7. loom-rl grpo GRPO on 3-digit sums with the exact-answer reward: pass@1 before and after
#   8. loom-eval    the final model on the held-out sums, with pass@k
#   9. loom-chat    one scripted chat, its feedback recorded as a preference pair
#  10. loom-eval --card  a report card of every stage, side by side: multiple choice on the
#                held-out sums, their bits per byte as text, greedy exact match in chat, grammar
#                and counterfactual pairs
#
#   scripts/rl_demo.sh [--build DIR] [--out DIR] [--quick] [--threads N]
# --quick runs every stage with a few steps (the CI check that the lifecycle keeps working; its
# figures mean nothing). Prints a table of results and a final key=value line.
set -euo pipefail
build=build/release
out=${TMPDIR:-/tmp}/loom-rl-demo
quick=0
threads=2
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --threads) threads="$2"; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--out DIR] [--quick] [--threads N]" >&2; exit 2 ;;
  esac
done
bin="$build/examples"
for p in loom-data loom-train loom-finetune loom-rl loom-eval loom-chat; do
  [ -x "$bin/$p" ] || { echo "no $bin/$p: build it first (cmake --build --preset release)" >&2; exit 1; }
done
here="$(cd "$(dirname "$0")" && pwd)"
rm -rf "$out"
mkdir -p "$out"
if [ "$quick" = 1 ]; then
  gen="--pretrain 4000 --sft 600 --prompts 200 --test 40 --pairs 300 --pairs-val 60"
  pre_steps=20; ft_steps=20; rm_steps=10; dpo_steps=6; grpo_steps=4; eval_limit=40; group=4; pps=4
  split=0.8,0.1,0.1  # 100 documents: enough for val and test
else
  gen=""
  pre_steps=1500; ft_steps=3000; rm_steps=1000; dpo_steps=150; grpo_steps=200; eval_limit=400; group=8; pps=32
  split=0.94,0.03,0.03
fi
final() { grep '^final' "$1" | tail -1; }
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<< "$1"; }
t_start=$(date +%s)
stage() { echo "== $1" >&2; }
common="--threads $threads"

stage "1. data (scripts/make_rl_data.py)"
python3 "$here/make_rl_data.py" "$out/data" $gen > "$out/data.log"
d="$out/data"
# Raw text: 40 facts per document, as JSONL, so that splitting and deduplication work on documents.
python3 - "$d" <<'EOF'
import glob, json, sys
d = sys.argv[1]
lines = []
for f in sorted(glob.glob(d + "/raw/*.txt")):
    lines += open(f).read().splitlines()
with open(d + "/raw.jsonl", "w") as out:
    for i in range(0, len(lines), 40):
        out.write(json.dumps({"text": "\n".join(lines[i:i + 40]) + "\n"}) + "\n")
EOF

stage "2. loom-data: raw text -> shards"
"$bin/loom-data" run --input "$d/raw.jsonl" --out "$out/shards" --quality none --split "$split" --quiet --threads "$threads" > "$out/shards.log"
data_final=$(final "$out/shards.log")

stage "3. loom-train: pretraining ($pre_steps steps)"
"$bin/loom-train" --data "$out/shards" --preset char --block-size 48 --batch-size 32 --steps "$pre_steps" --lr 2e-3 \
  --warmup 50 --eval-interval 100000 --sample-tokens 0 --final-eval-iters 4 $common --out "$out/pre" > "$out/pre.log" 2>&1
pre_final=$(final "$out/pre.log")

stage "4. loom-finetune: supervised fine-tuning ($ft_steps steps)"
"$bin/loom-finetune" --init "$out/pre/ckpt.safetensors" --data "$d/sft_train.jsonl" --steps "$ft_steps" --batch-size 32 \
  --lr 1e-3 --warmup 50 --eval-interval 100000 $common --out "$out/sft" > "$out/sft.log" 2>&1
sft="$out/sft/ckpt.safetensors"

stage "5. loom-rl rm: a reward model ($rm_steps steps)"
"$bin/loom-rl" rm --init "$sft" --data "$d/pairs_train.jsonl" --val "$d/pairs_val.jsonl" --steps "$rm_steps" \
  --batch-size 32 --lr 3e-4 --eval-interval 100000 $common --out "$out/rm" > "$out/rm.log" 2>&1
rm_final=$(final "$out/rm.log")

stage "6. loom-rl dpo ($dpo_steps steps), with the SFT term and without it"
for w in 1 0; do
  "$bin/loom-rl" dpo --init "$sft" --data "$d/pairs_train.jsonl" --val "$d/pairs_val.jsonl" --eval-prompts "$d/prompts_test.jsonl" \
    --eval-limit "$eval_limit" --steps "$dpo_steps" --batch-size 32 --lr 2e-5 --beta 0.1 --sft-weight "$w" \
    --eval-interval 100000 $common --out "$out/dpo$w" > "$out/dpo$w.log" 2>&1
done
dpo_final=$(final "$out/dpo1.log")
dpo0_final=$(final "$out/dpo0.log")

stage "7. loom-rl grpo on 3-digit sums ($grpo_steps steps)"
"$bin/loom-rl" grpo --init "$sft" --prompts "$d/prompts_train.jsonl" --reward exact --eval-prompts "$d/prompts_test.jsonl" \
  --eval-limit "$eval_limit" --steps "$grpo_steps" --group "$group" --prompts-per-step "$pps" --lr 3e-5 --epochs 4 --max-answer 6 \
  --samples 8 --eval-interval 100000 $common --out "$out/grpo" > "$out/grpo.log" 2>&1
grpo_final=$(final "$out/grpo.log")

stage "8. loom-eval: the final model on the held-out sums"
"$bin/loom-eval" --ckpt "$out/grpo/ckpt.safetensors" --data "$d/test_add3.jsonl" --limit "$eval_limit" --samples 8 \
  --max-answer 6 $common > "$out/eval.log"
eval_final=$(grep '^eval' "$out/eval.log" | tail -1)

stage "9. loom-chat: one question, rated and corrected"
printf 'What is 123 + 456?\n/bad\n/better 123 + 456 = 579\n\n' | "$bin/loom-chat" --ckpt "$out/grpo/ckpt.safetensors" \
  --feedback "$out/feedback.jsonl" --max-tokens 8 > "$out/chat.log" 2> "$out/chat.err"
chat_final=$(final "$out/chat.log")

stage "10. loom-eval --card: every stage side by side"
# An untrained model of the same shape (one step at learning rate 0) is the first column, so that
# pretraining's gain shows too.
"$bin/loom-train" --data "$out/shards" --preset char --block-size 48 --steps 1 --lr 0 --min-lr 0 --warmup 0 \
  --sample-tokens 0 --final-eval-iters 1 $common --out "$out/init" > "$out/init.log" 2>&1
python3 "$here/make_eval_sets.py" "$out/evalsets" --seed 1 --mc 1 --pairs 200 --bias 200 > "$out/evalsets.log"
# The held-out sums, as the raw text writes them: a multiple-choice set ("a + b = " and four
# answers: the sum, one or two off, ten off, its last two digits swapped) and a text.
python3 - "$d/test_add3.jsonl" "$out/evalsets" "$eval_limit" <<'EOF'
import json, random, re, sys
src, out, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(7)
items, text = [], []
for line in open(src):
    a, b = map(int, re.search(r"(\d+) \+ (\d+)", json.loads(line)["messages"][0]["content"]).groups())
    s = a + b
    wrong = [s + rng.choice([-2, -1, 1, 2]), s + rng.choice([-10, 10]), int(str(s)[:-2] + str(s)[-1] + str(s)[-2])]
    choices = list(dict.fromkeys([str(s)] + [str(w) for w in wrong if w > 0]))
    while len(choices) < 4:
        choices.append(str(s + len(choices) * 100))
    order = list(range(4))
    rng.shuffle(order)
    items.append({"context": f"{a} + {b} = ", "choices": [choices[i] for i in order], "answer": order.index(0)})
    text.append(f"{a} + {b} = {s}\n")
with open(out + "/arith_mc.jsonl", "w") as f:
    f.writelines(json.dumps(it) + "\n" for it in items[:limit])
open(out + "/heldout.txt", "w").write("".join(text[:limit]))
open(out + "/heldout_chat.jsonl", "w").writelines(open(src).readlines()[:limit])
# The pairs whose sentences fit the model's context of 48 bytes (with the start token).
for name in ("grammar_pairs", "counterfactual_pairs"):
    path = f"{out}/{name}.jsonl"
    rows = [json.loads(line) for line in open(path)]
    fit = [r for r in rows if max(len(v.encode()) for k, v in r.items() if k.startswith("sent")) <= 46]
    open(path, "w").writelines(json.dumps(r) + "\n" for r in fit)
EOF
"$bin/loom-eval" --ckpt "$out/init/ckpt.safetensors" --ckpt "$out/pre/ckpt.safetensors" --ckpt "$sft" \
  --ckpt "$out/dpo1/ckpt.safetensors" --ckpt "$out/grpo/ckpt.safetensors" --card "$out/card" --sets "$out/evalsets" \
  --text "$out/evalsets/heldout.txt" --chat "$out/evalsets/heldout_chat.jsonl" --prompt "123 + 456 = " \
  --prompt "7 + 8 = " > "$out/card.log" 2>&1
t_end=$(date +%s)

pct() { python3 -c "print(f'{100*float(\"$1\"):.1f}%')"; }
echo
echo "| stage | result |"
echo "|---|---|"
echo "| loom-data | $(field "$data_final" kept) of $(field "$data_final" documents_in) documents kept, $(field "$data_final" train_tokens) train tokens |"
echo "| loom-train | val loss $(field "$pre_final" val_loss) after $pre_steps steps |"
echo "| loom-finetune | $(final "$out/sft.log" | sed 's/^final //') |"
echo "| loom-rl rm | held-out preference accuracy $(pct "$(field "$rm_final" val_accuracy)") |"
echo "| loom-rl dpo --sft-weight 1 | held-out margin $(field "$dpo_final" val_margin_start) -> $(field "$dpo_final" val_margin), pair accuracy $(pct "$(field "$dpo_final" val_accuracy)"), exact match $(pct "$(field "$dpo_final" exact_match_start)") -> $(pct "$(field "$dpo_final" exact_match)") |"
echo "| loom-rl dpo --sft-weight 0 | held-out margin $(field "$dpo0_final" val_margin_start) -> $(field "$dpo0_final" val_margin), pair accuracy $(pct "$(field "$dpo0_final" val_accuracy)"), exact match $(pct "$(field "$dpo0_final" exact_match_start)") -> $(pct "$(field "$dpo0_final" exact_match)") |"
echo "| loom-rl grpo | pass@1 $(pct "$(field "$grpo_final" pass_at_1_start)") -> $(pct "$(field "$grpo_final" pass_at_1)"), greedy exact match $(pct "$(field "$grpo_final" exact_match_start)") -> $(pct "$(field "$grpo_final" exact_match)"), sampling $(pct "$(field "$grpo_final" gen_share)") of the time |"
echo "| loom-eval | ${eval_final#eval } |"
echo "| loom-chat | $(field "$chat_final" pairs) preference pair(s) recorded |"
echo "| loom-eval --card | $out/card/report.md: init, pretrained, fine-tuned, DPO, GRPO side by side |"
echo
echo "final seconds=$((t_end - t_start)) rm_val_accuracy=$(field "$rm_final" val_accuracy) dpo_exact_match=$(field "$dpo_final" exact_match) dpo_val_margin=$(field "$dpo_final" val_margin) grpo_pass_at_1_start=$(field "$grpo_final" pass_at_1_start) grpo_pass_at_1=$(field "$grpo_final" pass_at_1) feedback_pairs=$(field "$chat_final" pairs)"
