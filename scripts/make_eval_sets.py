#!/usr/bin/env python3
"""Writes small seeded evaluation sets for loom's likelihood scorers (include/loom/align/scoring.hpp).

Files written into OUT_DIR, one JSON object per line, in the layouts the scorers read:

  arith_mc.jsonl              --mc multiple-choice additions of two numbers in 1..99, in the simple
                              layout: {"context": "12+7=", "choices": ["19", "18", "29", "91"],
                              "answer": 0}. One choice is the sum; the three others are plausible
                              wrong sums (one or two off, ten off, the last two digits swapped), distinct,
                              never negative, without leading zeros. The right one's place is
                              drawn uniformly. No problem appears twice.
  grammar_pairs.jsonl         --pairs minimal pairs in BLiMP's layout: {"sentence_good": "The dog
                              runs.", "sentence_bad": "The dog run.", "UID": ..., "field":
                              "morphology", "linguistics_term": ..., "pair_id": n}, from templates
                              over the word lists below, in three paradigms (UIDs):
                              subject_verb_agreement (the verb's number), determiner_noun_agreement
                              (this/that against these/those) and anaphor_number_agreement
                              (itself against themselves). The two sentences differ in one word.
  counterfactual_pairs.jsonl  --bias pairs in CrowS-Pairs' layout: {"sent_more": ..., "sent_less":
                              ..., "bias_type": ...}: one neutral sentence frame filled with a word
                              from list A (sent_more) and one from list B (sent_less), nothing else
                              changed. Types: gender (given names), age (young/elderly), occupation.
                              The frames say nothing about anyone; which list is "A" is a fixed,
                              arbitrary choice. So the score (the share of pairs where the model
                              finds sent_more more likely) shows only whether the model prefers one
                              list's words in these frames (0.5: no preference): an illustration
                              of the measurement, not a benchmark of stereotypes.

Standard library only; the same --seed gives the same bytes. The last line printed is
"final mc=N pairs=N bias=N".

  python3 scripts/make_eval_sets.py data/eval --seed 1
"""

import argparse
import json
import os
import random
import sys

# --- grammar: (singular, plural) nouns and (third person singular, plural) verbs -----------------
ANIMALS = [("dog", "dogs"), ("cat", "cats"), ("bird", "birds"), ("horse", "horses"), ("fox", "foxes"),
           ("mouse", "mice"), ("rabbit", "rabbits"), ("goose", "geese")]
PEOPLE = [("child", "children"), ("teacher", "teachers"), ("farmer", "farmers"), ("student", "students"),
          ("baby", "babies"), ("neighbour", "neighbours"), ("driver", "drivers"), ("painter", "painters")]
VERBS = [("runs", "run"), ("sleeps", "sleep"), ("waits", "wait"), ("jumps", "jump"), ("eats", "eat"),
         ("walks", "walk"), ("hides", "hide"), ("rests", "rest")]
ADVERBIALS = ["", " quickly", " every morning", " in the garden", " near the river", " after lunch", " at night"]
REFLEXIVE_VERBS = ["saw", "hurt", "cleaned", "scratched", "noticed", "warmed"]
REFLEXIVE_ENDINGS = ["", " in the mirror", " by accident", " again", " in the sun"]
DETERMINERS = [("this", "these"), ("that", "those")]  # (singular, plural)
PARADIGMS = ["subject_verb_agreement", "determiner_noun_agreement", "anaphor_number_agreement"]

# --- counterfactual pairs: (list A, list B) per type, and neutral frames ----------------------------
BIAS_LISTS = {
    "gender": (["Emma", "Olivia", "Sophia", "Mia", "Grace", "Anna"],
               ["Liam", "Noah", "James", "Lucas", "Henry", "Jack"]),
    "age": (["young", "teenage"], ["elderly", "retired"]),
    "occupation": (["doctor", "engineer", "lawyer", "architect"], ["cashier", "cleaner", "waiter", "porter"]),
}
BIAS_FRAMES = {
    "gender": ["{} bought fresh bread at the market.", "{} took the early train to the city.",
               "{} watered the plants on the balcony.", "{} read a book in the park.",
               "{} called a friend after dinner.", "{} walked the dog before breakfast."],
    "age": ["The {} neighbour fixed the fence on Sunday.", "The {} passenger found a seat near the window.",
            "The {} visitor asked for directions to the museum.", "The {} customer paid for the groceries.",
            "The {} runner finished the race in the rain.", "The {} guest arrived at the party on time."],
    "occupation": ["The {} read the newspaper on the train.", "The {} ordered a coffee at the corner cafe.",
                   "The {} parked the car outside the house.", "The {} went for a swim on Saturday.",
                   "The {} cooked dinner for the family.", "The {} painted the kitchen last week."],
}


def capital(s):
    return s[0].upper() + s[1:]


def arith_item(rng, a, b):
    """A multiple-choice addition: the sum and three distinct plausible wrong sums, shuffled."""
    s = a + b
    wrong = {s - 1, s + 1, s - 2, s + 2, s - 10, s + 10}
    d = str(s)
    if len(d) >= 2 and d[-1] != d[-2] and (len(d) > 2 or d[-1] != "0"):
        wrong.add(int(d[:-2] + d[-1] + d[-2]))  # the last two digits swapped
    wrong = sorted(w for w in wrong if w >= 0 and w != s)
    choices = [s] + rng.sample(wrong, 3)
    rng.shuffle(choices)
    return {"context": f"{a}+{b}=", "choices": [str(c) for c in choices], "answer": choices.index(s)}


def arith_set(rng, n):
    problems = [(a, b) for a in range(1, 100) for b in range(1, 100)]
    if n > len(problems):
        sys.exit(f"make_eval_sets: --mc {n} is more than the {len(problems)} distinct problems")
    return [arith_item(rng, a, b) for a, b in rng.sample(problems, n)]


def grammar_pair(rng, uid):
    """(good, bad, linguistics_term) of one paradigm, drawn from the word lists."""
    plural = rng.random() < 0.5
    if uid == "subject_verb_agreement":
        sg, pl = rng.choice(ANIMALS + PEOPLE)
        v3, vb = rng.choice(VERBS)
        adv = rng.choice(ADVERBIALS)
        noun, good, bad = (pl, vb, v3) if plural else (sg, v3, vb)
        return f"The {noun} {good}{adv}.", f"The {noun} {bad}{adv}.", "subject-verb agreement"
    if uid == "determiner_noun_agreement":
        sg, pl = rng.choice(ANIMALS + PEOPLE)
        v3, vb = rng.choice(VERBS)
        adv = rng.choice(ADVERBIALS)
        d_sg, d_pl = rng.choice(DETERMINERS)
        noun, verb, good, bad = (pl, vb, d_pl, d_sg) if plural else (sg, v3, d_sg, d_pl)
        return f"{capital(good)} {noun} {verb}{adv}.", f"{capital(bad)} {noun} {verb}{adv}.", "determiner-noun agreement"
    sg, pl = rng.choice(ANIMALS) if not plural else rng.choice(ANIMALS + PEOPLE)  # "itself" for animals only
    verb = rng.choice(REFLEXIVE_VERBS)
    end = rng.choice(REFLEXIVE_ENDINGS)
    noun, good, bad = (pl, "themselves", "itself") if plural else (sg, "itself", "themselves")
    return f"The {noun} {verb} {good}{end}.", f"The {noun} {verb} {bad}{end}.", "anaphor agreement"


def distinct(rng, n, draw, what, flag):
    """n distinct items from draw(rng), or exits naming the flag when they run out."""
    seen, out = set(), []
    misses = 0  # draws in a row that gave nothing new: many mean the lists are used up
    while len(out) < n:
        item = draw(rng)
        key = json.dumps(item, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(item)
            misses = 0
        else:
            misses += 1
            if misses > 20000:
                sys.exit(f"make_eval_sets: {flag} {n}: only {len(out)} distinct {what} could be made")
    return out


def grammar_set(rng, n):
    def draw(r):
        uid = PARADIGMS[r.randrange(len(PARADIGMS))]
        good, bad, term = grammar_pair(r, uid)
        return {"sentence_good": good, "sentence_bad": bad, "UID": uid, "field": "morphology",
                "linguistics_term": term}
    rows = distinct(rng, n, draw, "minimal pairs", "--pairs")
    for i, row in enumerate(rows):
        row["pair_id"] = i
    return rows


def bias_set(rng, n):
    types = sorted(BIAS_LISTS)

    def draw(r):
        kind = types[r.randrange(len(types))]
        a_list, b_list = BIAS_LISTS[kind]
        frame = r.choice(BIAS_FRAMES[kind])
        return {"sent_more": frame.format(r.choice(a_list)), "sent_less": frame.format(r.choice(b_list)),
                "bias_type": kind}
    return distinct(rng, n, draw, "counterfactual pairs", "--bias")


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mc", type=int, default=500, help="multiple-choice additions")
    ap.add_argument("--pairs", type=int, default=600, help="grammatical minimal pairs")
    ap.add_argument("--bias", type=int, default=200, help="counterfactual pairs")
    args = ap.parse_args()
    for flag in ("mc", "pairs", "bias"):
        if getattr(args, flag) < 1:
            sys.exit(f"make_eval_sets: --{flag} must be at least 1")
    os.makedirs(args.out_dir, exist_ok=True)
    # one generator per set, so that the size of one set does not change the others
    mc = arith_set(random.Random(f"{args.seed}:mc"), args.mc)
    pairs = grammar_set(random.Random(f"{args.seed}:pairs"), args.pairs)
    bias = bias_set(random.Random(f"{args.seed}:bias"), args.bias)
    write_jsonl(os.path.join(args.out_dir, "arith_mc.jsonl"), mc)
    write_jsonl(os.path.join(args.out_dir, "grammar_pairs.jsonl"), pairs)
    write_jsonl(os.path.join(args.out_dir, "counterfactual_pairs.jsonl"), bias)
    print(f"wrote {args.out_dir}/arith_mc.jsonl, grammar_pairs.jsonl, counterfactual_pairs.jsonl")
    print(f"final mc={len(mc)} pairs={len(pairs)} bias={len(bias)}")


if __name__ == "__main__":
    main()
