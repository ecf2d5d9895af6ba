#!/usr/bin/env python3
"""Writes a small, seeded supervised fine-tuning data set for the loom SFT demo.

Two tasks, in the conversational JSONL layout that loom::align::read_conversations (and TRL's
SFTTrainer) read, one conversation per line:

  {"messages": [{"role": "user", "content": "What is 47 + 38?"}, {"role": "assistant", "content": "85"}]}

  (a) arithmetic: sums and differences of two 2-digit (10..99) or two 3-digit (100..999)
      numbers, differences never negative, asked in a few phrasings;
  (b) word reversal: "Reverse the word: planet" -> "tenalp", over real English words and
      pronounceable made-up words (syllables), also in a few phrasings.

Files written into OUT_DIR:

  train.jsonl, val.jsonl, test.jsonl   the mixed tasks; no question (the problem itself: the
                                       numbers and operation, or the word, whatever the phrasing)
                                       appears in two splits, nor twice in one
  test_add2.jsonl                      2-digit additions only, held out from every other split
  train_add2.jsonl                     every other 2-digit addition (8,100 pairs less the held-out
                                       ones), for the 2-digit addition target: dense coverage of
                                       one skill, as minGPT's adder trains on
  pretrain.txt                         plain text, one fact per line ("47 + 38 = 85",
                                       "planet reversed is tenalp."), drawn only from problems
                                       that are not in val, test or test_add2, for optional
                                       pretraining before fine-tuning

Standard library only; the same --seed gives the same files. Prints the counts at the end.

  python3 scripts/make_sft_data.py data/sft --train 20000 --val 500 --test 500
"""

import argparse
import json
import os
import random
import sys

ARITH_PHRASINGS = [
    "What is {a} {op} {b}?",
    "{a} {op} {b} =",
    "Compute {a} {op} {b}.",
    "Calculate {a} {op} {b}.",
    "What do you get for {a} {op} {b}?",
]
REVERSE_PHRASINGS = [
    "Reverse the word: {w}",
    "Write {w} backwards.",
    "Spell the word {w} in reverse.",
    "What is {w} reversed?",
]

# Common English words (the task also uses made-up words, so there are enough of them).
WORDS = """
planet garden window yellow silver winter summer river market forest castle bridge doctor
engine family friend basket button candle carpet cheese circle closet coffee cookie copper
cotton dinner dragon energy finger flower folder future galaxy ginger guitar hammer harbor
helmet island jacket jungle kitten ladder lemon letter lizard magnet marble meadow mirror
monkey motion napkin needle number object orange oyster packet paddle pencil pepper pillow
pirate pocket puzzle rabbit rocket saddle salmon school shadow signal singer sister spider
spirit spring square stable statue string sunset tablet tennis ticket tiger tomato tunnel
turtle valley velvet violin wallet walrus wizard wonder zipper anchor apple arrow autumn
badger banana barrel beacon beaver bottle branch bucket butter cactus camera canyon carrot
cherry chimney cloud comet cricket crystal desert dolphin dream eagle falcon feather fiddle
fossil frost goblin honey horizon iceberg insect kettle lantern laptop lighthouse lobster
meteor mountain muffin nebula noodle ocean orchard otter paper parrot peach pebble penguin
pickle planet plum pumpkin quartz radio rainbow raven ribbon robot rooster sailor sandwich
scarf shell shovel snail sparrow squirrel star stone storm sugar teapot thunder timber
tower tractor trumpet tulip umbrella unicorn vessel village volcano wagon water whale
whistle willow wolf yogurt zebra
""".split()
ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
          "br", "ch", "cl", "dr", "fl", "gr", "pl", "sh", "st", "th", "tr"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "oo", "ou"]
CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck"]


def made_up_word(rng):
    """A pronounceable non-word of 2 or 3 syllables."""
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)
                   for _ in range(rng.choice((2, 2, 3))))


def arith_key(rng, digits, op):
    lo, hi = (10, 99) if digits == 2 else (100, 999)
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    if op == "-" and a < b:
        a, b = b, a
    return ("arith", a, op, b)


def word_key(rng):
    w = rng.choice(WORDS) if rng.random() < 0.15 else made_up_word(rng)
    return ("reverse", w)


def answer(key):
    if key[0] == "arith":
        _, a, op, b = key
        return str(a + b if op == "+" else a - b)
    return key[1][::-1]


def question(key, rng):
    if key[0] == "arith":
        _, a, op, b = key
        return rng.choice(ARITH_PHRASINGS).format(a=a, op=op, b=b)
    return rng.choice(REVERSE_PHRASINGS).format(w=key[1])


def fact(key):
    if key[0] == "arith":
        _, a, op, b = key
        return f"{a} {op} {b} = {answer(key)}"
    return f"{key[1]} reversed is {answer(key)}."


# (kind, weight) of the mixed splits: 2-digit +, 2-digit -, 3-digit +, 3-digit -, reversal
MIX = [((2, "+"), 0.2), ((2, "-"), 0.15), ((3, "+"), 0.2), ((3, "-"), 0.15), ("reverse", 0.3)]


def draw_key(rng):
    kind = rng.choices([k for k, _ in MIX], weights=[w for _, w in MIX])[0]
    return word_key(rng) if kind == "reverse" else arith_key(rng, *kind)


def draw_unique(rng, n, used, draw, what):
    """n keys from draw() that are not in `used` (which they join)."""
    out, misses = [], 0
    while len(out) < n:
        k = draw(rng)
        if k in used:
            misses += 1
            if misses > 100 * n + 10000:
                sys.exit(f"make_sft_data: cannot find {n} distinct {what} questions; ask for fewer")
            continue
        used.add(k)
        out.append(k)
    return out


def write_jsonl(path, keys, rng):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for k in keys:
            msg = [{"role": "user", "content": question(k, rng)}, {"role": "assistant", "content": answer(k)}]
            f.write(json.dumps({"messages": msg}, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="folder to write into (created if missing)")
    p.add_argument("--train", type=int, default=20000, help="training conversations (default 20000)")
    p.add_argument("--val", type=int, default=500, help="validation conversations (default 500)")
    p.add_argument("--test", type=int, default=500, help="test conversations (default 500)")
    p.add_argument("--test-add2", type=int, default=500, help="held-out 2-digit additions (default 500)")
    p.add_argument("--pretrain", type=int, default=50000, help="lines of pretrain.txt (default 50000)")
    p.add_argument("--seed", type=int, default=1337, help="random seed (default 1337)")
    a = p.parse_args()
    for name in ("train", "val", "test", "test_add2", "pretrain"):
        if getattr(a, name) < 0:
            sys.exit(f"make_sft_data: --{name.replace('_', '-')} must be >= 0")
    os.makedirs(a.out_dir, exist_ok=True)
    rng = random.Random(a.seed)

    used = set()
    # held-out sets first, so the training split is drawn from what is left
    add2 = draw_unique(rng, a.test_add2, used, lambda r: arith_key(r, 2, "+"), "2-digit addition")
    test = draw_unique(rng, a.test, used, draw_key, "test")
    val = draw_unique(rng, a.val, used, draw_key, "validation")
    held_out = set(used)
    train = draw_unique(rng, a.train, used, draw_key, "training")

    # every 2-digit addition that no held-out split contains: the set the 2-digit target trains on
    add2_train = [("arith", x, "+", y) for x in range(10, 100) for y in range(10, 100)
                  if ("arith", x, "+", y) not in held_out]

    write_jsonl(os.path.join(a.out_dir, "train.jsonl"), train, rng)
    write_jsonl(os.path.join(a.out_dir, "train_add2.jsonl"), add2_train, rng)
    write_jsonl(os.path.join(a.out_dir, "val.jsonl"), val, rng)
    write_jsonl(os.path.join(a.out_dir, "test.jsonl"), test, rng)
    write_jsonl(os.path.join(a.out_dir, "test_add2.jsonl"), add2, rng)

    # pretraining text: the training problems first, then fresh ones, never a held-out problem
    facts = [fact(k) for k in train[: a.pretrain]]
    seen = set(train[: a.pretrain]) | held_out
    facts += [fact(k) for k in draw_unique(rng, a.pretrain - len(facts), seen, draw_key, "pretraining")]
    rng.shuffle(facts)
    path = os.path.join(a.out_dir, "pretrain.txt")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(facts) + ("\n" if facts else ""))
    os.replace(path + ".tmp", path)

    def kinds(keys):
        n_rev = sum(k[0] == "reverse" for k in keys)
        return f"{len(keys) - n_rev} arithmetic, {n_rev} reversal"

    print(f"train.jsonl      {len(train):6d}  ({kinds(train)})")
    print(f"val.jsonl        {len(val):6d}  ({kinds(val)})")
    print(f"test.jsonl       {len(test):6d}  ({kinds(test)})")
    print(f"test_add2.jsonl  {len(add2):6d}  (2-digit additions held out of every split)")
    print(f"train_add2.jsonl {len(add2_train):6d}  (every other 2-digit addition, none held out)")
    print(f"pretrain.txt     {len(facts):6d}  lines")
    print(f"out_dir={a.out_dir} train={len(train)} val={len(val)} test={len(test)} "
          f"test_add2={len(add2)} pretrain={len(facts)} seed={a.seed}")


if __name__ == "__main__":
    main()
