#!/usr/bin/env python3
"""Checks the guarantees of scripts/make_rl_data.py, the data of the learning-from-feedback demo.

Runs the generator into a temporary folder with small sizes and checks that every file exists and
parses; every answer is right; the held-out test problems appear in no other file (the numbers are
parsed out of every line of every file); sft_val and pairs_val are disjoint from the training files
and from the test problems; test_add3.jsonl holds the very problems of prompts_test.jsonl; every
rejected answer is a non-negative integer string, differs from the chosen one and matches the
perturbation its "kind" names; every 10th line of pairs_train.jsonl uses the message-list layout;
the raw text has duplicate and junk lines; the same seed gives the same bytes and another seed
does not; an impossible size is refused. Standard library only; exits 0 on success, else prints
what failed and exits 1.

  python3 tests/align/check_rl_data.py scripts/make_rl_data.py
"""

import os
import re
import sys
import tempfile

PROBLEM = re.compile(r"(\d+) \+ (\d+)")
NUMBER = re.compile(r"^(0|[1-9][0-9]*)$")
SIZES = {"--pretrain": 3000, "--sft": 800, "--sft-val": 60, "--prompts": 200, "--test": 3000,
         "--pairs": 400, "--pairs-val": 60}
FILES = ["raw/facts_00.txt", "raw/facts_01.txt", "raw/facts_02.txt", "raw/facts_03.txt",
         "sft_train.jsonl", "sft_val.jsonl", "prompts_train.jsonl", "prompts_test.jsonl",
         "test_add3.jsonl", "pairs_train.jsonl", "pairs_val.jsonl"]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generator_checks import (check, check_seeded, failures, read_jsonl,  # noqa: E402
                              report as report_as, run as run_generator)


def run(script, out, seed, extra=None):
    """The generator run with SIZES (or `extra` in their place)."""
    return run_generator(script, out, seed, extra or SIZES)


def key(a, b):
    return (min(a, b), max(a, b))


def problems(path):
    """Every problem {A, B} named anywhere in a file."""
    with open(path, encoding="utf-8") as f:
        return {key(int(a), int(b)) for a, b in PROBLEM.findall(f.read())}


def parse_question(text, where):
    m = re.fullmatch(r"What is (\d+) \+ (\d+)\?", text)
    if not check(m is not None, f"{where}: question {text!r} is not 'What is A + B?'"):
        return None
    return int(m.group(1)), int(m.group(2))


def no_carry(a, b):
    x, y = str(a), str(b)
    w = max(len(x), len(y))
    return str(int("".join(str((int(p) + int(q)) % 10) for p, q in zip(x.zfill(w), y.zfill(w)))))


def kind_matches(kind, right, wrong, a, b):
    """Whether `wrong` is what perturbation `kind` can make of the right answer."""
    if kind == "last_digit":
        return wrong[:-1] == right[:-1] and (int(wrong[-1]) - int(right[-1])) % 10 in (1, 9)
    if kind == "carry":
        return wrong == no_carry(a, b)
    if kind == "off10":
        return abs(int(wrong) - int(right)) == 10
    if kind == "off100":
        return abs(int(wrong) - int(right)) == 100
    if kind == "swap":
        return len(wrong) == len(right) and any(
            right[:i] + right[i + 1] + right[i] + right[i + 2:] == wrong for i in range(len(right) - 1))
    if kind == "drop":
        return any(right[:i] + right[i + 1:] == wrong for i in range(len(right)))
    if kind == "append":
        return len(wrong) == len(right) + 1 and wrong.startswith(right)
    return False


def check_conversations(path, is_3digit=False):
    """Each line: a user question and its right answer; returns the problems in order."""
    out = []
    for n, row in enumerate(read_jsonl(path), 1):
        where = f"{path}:{n}"
        msgs = row.get("messages")
        if not check(isinstance(msgs, list) and len(msgs) == 2 and msgs[0].get("role") == "user"
                     and msgs[1].get("role") == "assistant", f"{where}: not a user/assistant pair"):
            continue
        q = parse_question(msgs[0]["content"], where)
        if q is None:
            continue
        check(msgs[1]["content"] == str(q[0] + q[1]), f"{where}: wrong answer {msgs[1]['content']!r}")
        check(len(str(q[0])) == len(str(q[1])) and len(str(q[0])) in (2, 3)
              and (not is_3digit or q[0] >= 100), f"{where}: operands {q} of the wrong size")
        out.append(q)
    return out


def check_prompts(path):
    out = []
    for n, row in enumerate(read_jsonl(path), 1):
        where = f"{path}:{n}"
        q = parse_question(row.get("prompt", ""), where)
        if q is None:
            continue
        check(row.get("answer") == str(q[0] + q[1]), f"{where}: wrong answer {row.get('answer')!r}")
        check(100 <= q[0] <= 999 and 100 <= q[1] <= 999, f"{where}: not a 3-digit problem")
        out.append(q)
    return out


def check_pairs(path, mixed_layout):
    out, kinds = [], set()
    for n, row in enumerate(read_jsonl(path), 1):
        where = f"{path}:{n}"
        prompt, chosen, rejected = row.get("prompt"), row.get("chosen"), row.get("rejected")
        as_messages = isinstance(prompt, list)
        check(as_messages == (mixed_layout and n % 10 == 0),
              f"{where}: layout {'messages' if as_messages else 'plain'} where the other was expected")
        if as_messages:
            ok = (len(prompt) == 1 and prompt[0].get("role") == "user"
                  and isinstance(chosen, list) and len(chosen) == 1 and chosen[0].get("role") == "assistant"
                  and isinstance(rejected, list) and len(rejected) == 1
                  and rejected[0].get("role") == "assistant")
            if not check(ok, f"{where}: malformed message-list pair"):
                continue
            prompt, chosen, rejected = prompt[0]["content"], chosen[0]["content"], rejected[0]["content"]
        q = parse_question(prompt, where)
        if q is None:
            continue
        right = str(q[0] + q[1])
        check(chosen == right, f"{where}: chosen {chosen!r} is not {right}")
        check(isinstance(rejected, str) and NUMBER.match(rejected) is not None,
              f"{where}: rejected {rejected!r} is not a non-negative integer string")
        check(rejected != right, f"{where}: rejected equals the right answer")
        kind = row.get("kind")
        kinds.add(kind)
        if isinstance(rejected, str) and NUMBER.match(rejected):
            check(kind_matches(kind, right, rejected, *q), f"{where}: {rejected!r} is not a {kind!r} of {right}")
        out.append(q)
    return out, kinds


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: check_rl_data.py PATH/make_rl_data.py")
    script = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="loom_rl_data_") as tmp:
        d1, d2, d3, d4 = (os.path.join(tmp, x) for x in ("a", "b", "c", "d"))
        r = run(script, d1, 7)
        if not check(r.returncode == 0, f"generator failed: {r.stderr.strip()}"):
            return report()
        last = r.stdout.strip().splitlines()[-1]
        want = (f"final raw_lines={SIZES['--pretrain']} sft={SIZES['--sft']} prompts={SIZES['--prompts']} "
                f"test={SIZES['--test']} pairs={SIZES['--pairs']} pairs_val={SIZES['--pairs-val']}")
        check(last == want, f"final line {last!r}, expected {want!r}")
        for f in FILES:
            check(os.path.isfile(os.path.join(d1, f)), f"{f} missing")
        if failures:
            return report()
        p = lambda f: os.path.join(d1, f)

        # contents and answers
        raw_lines = []
        for f in FILES[:4]:
            with open(p(f), encoding="utf-8") as fh:
                raw_lines += fh.read().splitlines()
        check(len(raw_lines) == SIZES["--pretrain"], f"raw text has {len(raw_lines)} lines")
        junk = 0
        for line in raw_lines:
            m = re.fullmatch(r"(\d+) \+ (\d+) = (\d+)", line)
            if m:
                check(int(m.group(1)) + int(m.group(2)) == int(m.group(3)), f"raw fact {line!r} is wrong")
            else:
                junk += 1
                check(not PROBLEM.search(line), f"raw junk line {line!r} names a problem")
        check(0 < junk < len(raw_lines) // 100, f"{junk} junk lines in the raw text")
        check(any("@" in line for line in raw_lines), "no raw line with an e-mail address")
        check(len(set(raw_lines)) < len(raw_lines) - junk, "no duplicate fact line in the raw text")
        two = sum(1 for line in raw_lines if re.match(r"\d\d \+", line))
        check(0.25 < two / len(raw_lines) < 0.42, f"{two} of {len(raw_lines)} raw facts are 2-digit")

        sft = check_conversations(p("sft_train.jsonl"))
        sft_val = check_conversations(p("sft_val.jsonl"))
        test_conv = check_conversations(p("test_add3.jsonl"), is_3digit=True)
        check(len(sft) == SIZES["--sft"] and len(sft_val) == SIZES["--sft-val"], "sft sizes")
        prompts = check_prompts(p("prompts_train.jsonl"))
        test = check_prompts(p("prompts_test.jsonl"))
        check(len(prompts) == SIZES["--prompts"] and len(test) == SIZES["--test"], "prompt sizes")
        check(test == test_conv, "test_add3.jsonl does not hold the problems of prompts_test.jsonl")
        pairs, kinds = check_pairs(p("pairs_train.jsonl"), True)
        pairs_val, kinds_val = check_pairs(p("pairs_val.jsonl"), False)
        check(len(pairs) == SIZES["--pairs"] and len(pairs_val) == SIZES["--pairs-val"], "pair sizes")
        all_kinds = {"last_digit", "carry", "off10", "off100", "swap", "drop", "append"}
        check(kinds | kinds_val == all_kinds, f"perturbation kinds {sorted(map(str, kinds | kinds_val))}")

        # held out: distinct, and in no other file (numbers parsed out of every file)
        test_keys = {key(*q) for q in test}
        check(len(test_keys) == len(test), "prompts_test.jsonl repeats a problem")
        for f in FILES:
            if f in ("prompts_test.jsonl", "test_add3.jsonl"):
                continue
            shared = problems(p(f)) & test_keys
            check(not shared, f"{f} holds {len(shared)} test problems, e.g. {sorted(shared)[:3]}")
        training = set()
        for f in FILES[:4] + ["sft_train.jsonl", "prompts_train.jsonl", "pairs_train.jsonl"]:
            training |= problems(p(f))
        for name, qs in (("sft_val", sft_val), ("pairs_val", pairs_val)):
            keys = {key(*q) for q in qs}
            check(len(keys) == len(qs), f"{name} repeats a problem")
            check(not keys & test_keys, f"{name} shares problems with the test set")
            check(not keys & training, f"{name} shares {len(keys & training)} problems with training files")
        check(len({key(*q) for q in prompts}) == len(prompts), "prompts_train.jsonl repeats a problem")

        # determinism: same seed, same bytes; another seed, other bytes
        r2, r3 = run(script, d2, 7), run(script, d3, 8)
        check(r2.returncode == 0 and r3.returncode == 0, "second or third run failed")
        check_seeded(FILES, d1, d2, d3, differ=["sft_train.jsonl"])

        # an impossible held-out size is refused with a message
        big = dict(SIZES, **{"--test": 405451})
        r4 = run(script, d4, 7, big)
        check(r4.returncode != 0 and "--test" in r4.stderr, "an impossible --test was not refused")
    return report()


def report():
    return report_as("check_rl_data")


if __name__ == "__main__":
    sys.exit(main())
