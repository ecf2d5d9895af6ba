#!/usr/bin/env python3
"""Writes the seeded data of loom's learning-from-feedback demonstration (3-digit addition).

A tiny model goes through its whole life on arithmetic: pretraining on raw text, supervised
fine-tuning, a reward model, DPO and GRPO on 3-digit additions, then evaluation. This script
writes every data set it needs. Problems are additions of two 2-digit (10..99) numbers or two
3-digit (100..999) numbers, one third and two thirds; a problem is the unordered pair {A, B}
(A + B and B + A are the same problem), shown in either order.

Files written into OUT_DIR:

  raw/facts_00.txt .. facts_03.txt  raw pretraining text, one fact per line ("347 + 128 = 475"),
                                    --pretrain lines in all, with about 2% exact duplicate lines
                                    and a few lines a data cleaner should drop (an e-mail address,
                                    "JavaScript", "lorem ipsum"), so the data stage has work to do
  sft_train.jsonl                   --sft conversations {"messages": [{"role": "user", "content":
                                    "What is 347 + 128?"}, {"role": "assistant", "content": "475"}]}
  sft_val.jsonl                     --sft-val such conversations (default 300)
  prompts_train.jsonl               --prompts GRPO prompts, 3-digit only:
                                    {"prompt": "What is 347 + 128?", "answer": "475"}
  prompts_test.jsonl                --test held-out 3-digit prompts, same layout
  test_add3.jsonl                   the very same problems, in the same order, as conversations
  pairs_train.jsonl                 --pairs preference pairs {"prompt": "What is 347 + 128?",
                                    "chosen": "475", "rejected": "465", "kind": "carry"}; every
                                    10th line uses the message-list layout ("prompt" a list of user
                                    messages, "chosen"/"rejected" lists of one assistant message)
  pairs_val.jsonl                   --pairs-val preference pairs, plain layout

A rejected answer is a plausible wrong answer, never the right one and never negative, made by
one perturbation, recorded in "kind": last_digit (last digit one up or down, mod 10), carry (the
column sums mod 10 with every carry forgotten), off10 / off100 (10 or 100 more or less), swap
(two adjacent different digits swapped), drop (a digit left out), append (a digit added at the
end). Answers never have leading zeros.

Held out: no test problem appears in any other file (raw text included); sft_val and pairs_val
are disjoint from the test problems and from every training file (raw, sft_train,
prompts_train, pairs_train). Held-out sets hold distinct problems; training files repeat
problems only where a class has too few left (there are only 4,095 2-digit problems).

Standard library only; the same --seed gives the same bytes. Prints the counts at the end, the
last line key=value pairs:

  python3 scripts/make_rl_data.py data/rl --seed 1
"""

import argparse
import json
import os
import random
import sys

RAW_FILES = 4
DUP_FRACTION = 0.02
JUNK_PER_LINE = 1 / 2000  # lines a cleaner should drop, per raw line
JUNK_LINES = [
    "contact admin@example.com for the answer key",
    "send corrections to maths.team@example.org",
    "answers checked by teacher.smith@school.example.net",
    "Please enable JavaScript to see the worked solutions.",
    "lorem ipsum dolor sit amet, consectetur adipiscing elit",
]
KINDS = ["last_digit", "carry", "off10", "off100", "swap", "drop", "append"]
LO = {2: 10, 3: 100}
HI = {2: 99, 3: 999}


def n_problems(digits):
    """Unordered pairs {A, B} of two numbers with `digits` digits."""
    n = HI[digits] - LO[digits] + 1
    return n * (n + 1) // 2


def key(p):
    """The problem of an ordered pair: the unordered pair, as (small, large)."""
    return (min(p), max(p))


def digits_of(k):
    return len(str(k[0]))


def orient(rng, k):
    """The problem shown in a random order."""
    return k if rng.random() < 0.5 else (k[1], k[0])


def draw(rng, digits, n, exclude, repeats, what):
    """n oriented problems of one class, none in `exclude`. Distinct while the class has enough
    problems left; beyond that, with `repeats`, every problem left once and then drawn again."""
    left = n_problems(digits) - sum(1 for k in exclude if digits_of(k) == digits)
    if n > left and not repeats:
        sys.exit(f"make_rl_data: {what} needs {n} distinct {digits}-digit problems, "
                 f"only {left} are left; ask for fewer")
    if n == 0:
        return []
    if left <= 0:
        sys.exit(f"make_rl_data: no {digits}-digit problem is left for {what}; hold out fewer")
    lo, hi = LO[digits], HI[digits]
    if n <= left // 2:  # rejection sampling: cheap while most of the class is free
        seen, out = set(), []
        while len(out) < n:
            a, b = rng.randint(lo, hi), rng.randint(lo, hi)
            k = key((a, b))
            if k in exclude or k in seen:
                continue
            seen.add(k)
            out.append(orient(rng, k))
        return out
    pool = [(a, b) for a in range(lo, hi + 1) for b in range(a, hi + 1) if (a, b) not in exclude]
    if n <= len(pool):
        keys = rng.sample(pool, n)
    else:
        keys = pool[:]
        rng.shuffle(keys)
        keys += [rng.choice(pool) for _ in range(n - len(pool))]
        rng.shuffle(keys)
    return [orient(rng, k) for k in keys]


def draw_mix(rng, n, exclude, repeats, what):
    """n problems, a third 2-digit and the rest 3-digit, in a random order."""
    n2 = n // 3
    out = draw(rng, 2, n2, exclude, repeats, what) + draw(rng, 3, n - n2, exclude, repeats, what)
    rng.shuffle(out)
    return out


def question(p):
    return f"What is {p[0]} + {p[1]}?"


def answer(p):
    return str(p[0] + p[1])


def no_carry(p):
    """The column sums mod 10, every carry forgotten, as a number."""
    a, b = str(p[0]), str(p[1])
    width = max(len(a), len(b))
    a, b = a.zfill(width), b.zfill(width)
    return str(int("".join(str((int(x) + int(y)) % 10) for x, y in zip(a, b))))


def perturb(rng, p):
    """(rejected, kind): a plausible wrong answer to problem p, non-negative, no leading zero."""
    right = answer(p)
    value = int(right)
    while True:
        kind = rng.choice(KINDS)
        if kind == "last_digit":
            d = (int(right[-1]) + rng.choice((1, -1))) % 10
            wrong = right[:-1] + str(d)
            if wrong[0] == "0":  # a one-digit answer 0 cannot occur (sums are >= 20)
                continue
        elif kind == "carry":
            wrong = no_carry(p)
        elif kind in ("off10", "off100"):
            step = 10 if kind == "off10" else 100
            wrong = str(value + step if value < step or rng.random() < 0.5 else value - step)
        elif kind == "swap":
            spots = [i for i in range(len(right) - 1) if right[i] != right[i + 1]
                     and not (i == 0 and right[1] == "0")]
            if not spots:
                continue
            i = rng.choice(spots)
            wrong = right[:i] + right[i + 1] + right[i] + right[i + 2:]
        elif kind == "drop":
            spots = [i for i in range(len(right)) if not (i == 0 and right[1] == "0")]
            i = rng.choice(spots)  # the last digit is always a spot: answers have >= 2 digits
            wrong = right[:i] + right[i + 1:]
        else:  # append
            wrong = right + str(rng.randint(0, 9))
        if wrong != right:
            return wrong, kind


def write_lines(path, lines):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    os.replace(path + ".tmp", path)


def conversation(p):
    return json.dumps({"messages": [{"role": "user", "content": question(p)},
                                    {"role": "assistant", "content": answer(p)}]})


def prompt_line(p):
    return json.dumps({"prompt": question(p), "answer": answer(p)})


def pair_line(rng, p, as_messages):
    wrong, kind = perturb(rng, p)
    if as_messages:
        return json.dumps({"prompt": [{"role": "user", "content": question(p)}],
                           "chosen": [{"role": "assistant", "content": answer(p)}],
                           "rejected": [{"role": "assistant", "content": wrong}], "kind": kind})
    return json.dumps({"prompt": question(p), "chosen": answer(p), "rejected": wrong, "kind": kind})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="folder to write into (created if missing)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--pretrain", type=int, default=60000, help="raw text lines in all (default 60000)")
    p.add_argument("--sft", type=int, default=20000, help="SFT training conversations (default 20000)")
    p.add_argument("--sft-val", type=int, default=300, help="SFT validation conversations (default 300)")
    p.add_argument("--prompts", type=int, default=4000, help="GRPO training prompts (default 4000)")
    p.add_argument("--test", type=int, default=400, help="held-out 3-digit test problems (default 400)")
    p.add_argument("--pairs", type=int, default=6000, help="training preference pairs (default 6000)")
    p.add_argument("--pairs-val", type=int, default=500, help="validation preference pairs (default 500)")
    a = p.parse_args()
    for name in ("pretrain", "sft", "sft_val", "prompts", "test", "pairs", "pairs_val"):
        if getattr(a, name) < 0:
            sys.exit(f"make_rl_data: --{name.replace('_', '-')} must be >= 0")
    rng = random.Random(a.seed)

    # held-out sets first (distinct problems), then the training sets from what is left
    held = set()
    test = draw(rng, 3, a.test, held, False, "--test")
    held |= {key(q) for q in test}
    sft_val = draw_mix(rng, a.sft_val, held, False, "--sft-val")
    held |= {key(q) for q in sft_val}
    pairs_val = draw_mix(rng, a.pairs_val, held, False, "--pairs-val")
    held |= {key(q) for q in pairs_val}

    sft = draw_mix(rng, a.sft, held, True, "--sft")
    prompts = draw(rng, 3, a.prompts, held, False, "--prompts")
    pairs = draw_mix(rng, a.pairs, held, True, "--pairs")

    # raw text: facts, then exact copies of some of them and junk lines, spread at random
    n_junk = min(a.pretrain, round(a.pretrain * JUNK_PER_LINE) or (1 if a.pretrain >= 20 else 0))
    n_dup = min(a.pretrain - n_junk, round(a.pretrain * DUP_FRACTION))
    n_fact = a.pretrain - n_junk - n_dup
    facts = [f"{q[0]} + {q[1]} = {answer(q)}" for q in draw_mix(rng, n_fact, held, True, "--pretrain")]
    dups = [rng.choice(facts) for _ in range(n_dup)] if facts else []
    junk = [JUNK_LINES[i % len(JUNK_LINES)] for i in range(n_junk)]
    raw = facts + dups + junk
    rng.shuffle(raw)
    n_exact_dup = len(raw) - len(set(raw))

    out = a.out_dir
    os.makedirs(os.path.join(out, "raw"), exist_ok=True)
    for i in range(RAW_FILES):
        lo, hi = len(raw) * i // RAW_FILES, len(raw) * (i + 1) // RAW_FILES
        write_lines(os.path.join(out, "raw", f"facts_{i:02d}.txt"), raw[lo:hi])
    write_lines(os.path.join(out, "sft_train.jsonl"), [conversation(q) for q in sft])
    write_lines(os.path.join(out, "sft_val.jsonl"), [conversation(q) for q in sft_val])
    write_lines(os.path.join(out, "prompts_train.jsonl"), [prompt_line(q) for q in prompts])
    write_lines(os.path.join(out, "prompts_test.jsonl"), [prompt_line(q) for q in test])
    write_lines(os.path.join(out, "test_add3.jsonl"), [conversation(q) for q in test])
    write_lines(os.path.join(out, "pairs_train.jsonl"),
                [pair_line(rng, q, i % 10 == 9) for i, q in enumerate(pairs)])
    write_lines(os.path.join(out, "pairs_val.jsonl"), [pair_line(rng, q, False) for q in pairs_val])

    def classes(qs):
        n2 = sum(1 for q in qs if q[0] < 100)
        return f"{n2} 2-digit, {len(qs) - n2} 3-digit, {len({key(q) for q in qs})} distinct"

    print(f"raw/facts_*.txt      {len(raw):6d}  lines in {RAW_FILES} files ({n_fact} facts, "
          f"{n_exact_dup} exact repeats, {n_junk} junk lines)")
    print(f"sft_train.jsonl      {len(sft):6d}  ({classes(sft)})")
    print(f"sft_val.jsonl        {len(sft_val):6d}  ({classes(sft_val)})")
    print(f"prompts_train.jsonl  {len(prompts):6d}  ({classes(prompts)})")
    print(f"prompts_test.jsonl   {len(test):6d}  (held out of every other file; test_add3.jsonl: the same)")
    print(f"pairs_train.jsonl    {len(pairs):6d}  ({classes(pairs)})")
    print(f"pairs_val.jsonl      {len(pairs_val):6d}  ({classes(pairs_val)})")
    print(f"final raw_lines={len(raw)} sft={len(sft)} prompts={len(prompts)} test={len(test)} "
          f"pairs={len(pairs)} pairs_val={len(pairs_val)}")


if __name__ == "__main__":
    main()
