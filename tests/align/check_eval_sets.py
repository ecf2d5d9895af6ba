#!/usr/bin/env python3
"""Checks the guarantees of scripts/make_eval_sets.py, the seeded sets of the likelihood scorers.

Runs the generator into a temporary folder and checks: the final line and the three files; every
multiple-choice line has a context "A+B=", four distinct non-negative choices without leading
zeros, exactly one of them the sum, at the index "answer", and no problem twice, with the right
answer in each of the four places; every minimal pair has the BLiMP fields, differs from its bad
sentence in exactly one word, and that word agrees in number with the noun (checked against the
generator's word lists: a singular noun takes the verb in -s, "this"/"that" and "itself", a
plural one the others), in all three paradigms; every counterfactual pair has the CrowS-Pairs
fields, and its two sentences differ only in the swapped word, taken from list A for sent_more
and list B for sent_less, in every bias type; no line repeats. The same seed gives the same bytes
and another seed does not; an impossible size is refused with its flag named. Standard library
only; exits 0 on success, else prints what failed and exits 1.

  python3 tests/align/check_eval_sets.py scripts/make_eval_sets.py
"""

import collections
import importlib.util
import os
import re
import sys
import tempfile

SIZES = {"--mc": 120, "--pairs": 150, "--bias": 90}
FILES = ["arith_mc.jsonl", "grammar_pairs.jsonl", "counterfactual_pairs.jsonl"]
NUMBER = re.compile(r"^(0|[1-9][0-9]*)$")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generator_checks import (check, check_seeded, failures, read_jsonl,  # noqa: E402
                              report as report_as, run as run_generator)


def run(script, out, seed, extra=None):
    """The generator run with SIZES (or `extra` in their place)."""
    return run_generator(script, out, seed, extra or SIZES)


def one_word_apart(a, b, where):
    """The index and the two words where sentences a and b differ; None unless exactly one word does."""
    wa, wb = a.rstrip(".").split(" "), b.rstrip(".").split(" ")
    diff = [i for i in range(min(len(wa), len(wb))) if wa[i] != wb[i]]
    if not check(len(wa) == len(wb) and len(diff) == 1, f"{where}: {a!r} and {b!r} do not differ in one word"):
        return None
    i = diff[0]
    return i, wa[i], wb[i]


def check_mc(path):
    rows = read_jsonl(path)
    seen, places = set(), collections.Counter()
    for n, row in enumerate(rows, 1):
        where = f"{path}:{n}"
        m = re.fullmatch(r"(\d+)\+(\d+)=", str(row.get("context")))
        choices, answer = row.get("choices"), row.get("answer")
        if not check(m is not None and isinstance(choices, list) and isinstance(answer, int),
                     f"{where}: not {{context: 'A+B=', choices: [...], answer: i}}"):
            continue
        a, b = int(m.group(1)), int(m.group(2))
        check(1 <= a <= 99 and 1 <= b <= 99, f"{where}: operands {a}, {b} outside 1..99")
        check(len(choices) == 4 and len(set(choices)) == 4, f"{where}: choices {choices} are not four distinct ones")
        check(all(isinstance(c, str) and NUMBER.match(c) for c in choices), f"{where}: a choice is not a number: {choices}")
        check([c == str(a + b) for c in choices].count(True) == 1, f"{where}: the sum is not exactly one choice")
        if check(0 <= answer < len(choices), f"{where}: answer {answer} out of range"):
            check(choices[answer] == str(a + b), f"{where}: choice {answer} = {choices[answer]!r} is not {a + b}")
            places[answer] += 1
        check((a, b) not in seen, f"{where}: the problem {a}+{b} appears twice")
        seen.add((a, b))
    check(sorted(places) == [0, 1, 2, 3], f"the right answer sits only in places {sorted(places)}")
    return rows


def check_grammar(path, gen):
    rows = read_jsonl(path)
    singular = {sg for sg, _ in gen.ANIMALS + gen.PEOPLE}
    plural = {pl for _, pl in gen.ANIMALS + gen.PEOPLE}
    v3 = {a for a, _ in gen.VERBS}
    vb = {b for _, b in gen.VERBS}
    uids = collections.Counter()
    for n, row in enumerate(rows, 1):
        where = f"{path}:{n}"
        good, bad, uid = row.get("sentence_good"), row.get("sentence_bad"), row.get("UID")
        if not check(isinstance(good, str) and isinstance(bad, str) and uid in gen.PARADIGMS
                     and row.get("field") == "morphology" and row.get("pair_id") == n - 1,
                     f"{where}: not a BLiMP line with a known UID: {row}"):
            continue
        uids[uid] += 1
        check(good.endswith(".") and bad.endswith("."), f"{where}: a sentence does not end with a period")
        d = one_word_apart(good, bad, where)
        if d is None:
            continue
        i, gw, bw = d
        words = good[:-1].split(" ")
        if uid == "subject_verb_agreement":
            noun = words[1]
            check(i == 2 and (noun in singular and gw in v3 and bw in vb or noun in plural and gw in vb and bw in v3),
                  f"{where}: {good!r} / {bad!r}: the verb does not agree in the good sentence only")
        elif uid == "determiner_noun_agreement":
            noun = words[1]
            gw, bw = gw.lower(), bw.lower()
            check(i == 0 and (noun in singular and gw in ("this", "that") and bw in ("these", "those")
                              or noun in plural and gw in ("these", "those") and bw in ("this", "that")),
                  f"{where}: {good!r} / {bad!r}: the determiner does not agree in the good sentence only")
        else:
            noun = words[1]
            check(i == 3 and (noun in singular and (gw, bw) == ("itself", "themselves")
                              or noun in plural and (gw, bw) == ("themselves", "itself")),
                  f"{where}: {good!r} / {bad!r}: the reflexive does not agree in the good sentence only")
    check(set(uids) == set(gen.PARADIGMS), f"paradigms {sorted(uids)}")
    return rows


def check_bias(path, gen):
    rows = read_jsonl(path)
    kinds = collections.Counter()
    for n, row in enumerate(rows, 1):
        where = f"{path}:{n}"
        more, less, kind = row.get("sent_more"), row.get("sent_less"), row.get("bias_type")
        if not check(isinstance(more, str) and isinstance(less, str) and kind in gen.BIAS_LISTS,
                     f"{where}: not a CrowS-Pairs line with a known bias type: {row}"):
            continue
        kinds[kind] += 1
        d = one_word_apart(more, less, where)
        if d is None:
            continue
        _, mw, lw = d
        a_list, b_list = gen.BIAS_LISTS[kind]
        check(mw in a_list and lw in b_list, f"{where}: {mw!r} / {lw!r} are not from lists A / B of {kind}")
        check(any(f.format(mw) == more and f.format(lw) == less for f in gen.BIAS_FRAMES[kind]),
              f"{where}: {more!r} / {less!r} do not fill one {kind} frame")
    check(set(kinds) == set(gen.BIAS_LISTS), f"bias types {sorted(kinds)}")
    return rows


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: check_eval_sets.py PATH/make_eval_sets.py")
    script = sys.argv[1]
    spec = importlib.util.spec_from_file_location("make_eval_sets", script)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)  # the word lists, to check agreement against
    with tempfile.TemporaryDirectory(prefix="loom_eval_sets_") as tmp:
        d1, d2, d3, d4 = (os.path.join(tmp, x) for x in ("a", "b", "c", "d"))
        r = run(script, d1, 7)
        if not check(r.returncode == 0, f"generator failed: {r.stderr.strip()}"):
            return report()
        last = r.stdout.strip().splitlines()[-1]
        want = f"final mc={SIZES['--mc']} pairs={SIZES['--pairs']} bias={SIZES['--bias']}"
        check(last == want, f"final line {last!r}, expected {want!r}")
        for f in FILES:
            check(os.path.isfile(os.path.join(d1, f)), f"{f} missing")
        if failures:
            return report()
        p = lambda f: os.path.join(d1, f)
        counts = [len(check_mc(p(FILES[0]))), len(check_grammar(p(FILES[1]), gen)), len(check_bias(p(FILES[2]), gen))]
        check(counts == [SIZES["--mc"], SIZES["--pairs"], SIZES["--bias"]], f"sizes {counts}")
        for f in FILES:
            with open(p(f), encoding="utf-8") as fh:
                lines = fh.read().splitlines()
            check(len(set(lines)) == len(lines), f"{f} repeats a line")

        # determinism: same seed, same bytes; another seed, other bytes
        r2, r3 = run(script, d2, 7), run(script, d3, 8)
        check(r2.returncode == 0 and r3.returncode == 0, "second or third run failed")
        check_seeded(FILES, d1, d2, d3, differ=FILES)

        # impossible sizes are refused with their flag named
        for flag, n in (("--mc", 10000), ("--bias", 100000), ("--pairs", 0)):
            r4 = run(script, d4, 7, dict(SIZES, **{flag: n}))
            check(r4.returncode != 0 and flag in r4.stderr, f"an impossible {flag} {n} was not refused: {r4.stderr!r}")
    return report()


def report():
    return report_as("check_eval_sets")


if __name__ == "__main__":
    sys.exit(main())
