"""Helpers shared by the checkers of the seeded data generators (check_rl_data.py and
check_eval_sets.py): a list of failures, a check that records one, a run of the generator, a
JSONL reader that records unparsable lines, the check that a seed fixes the output, and the
report. Standard library only."""
import json
import os
import subprocess
import sys

failures = []


def check(cond, what):
    """Records `what` as a failure unless cond holds."""
    if not cond:
        failures.append(what)
    return cond


def run(script, out, seed, sizes):
    """Runs generator `script` into `out` with --seed and the {flag: value} sizes."""
    args = [sys.executable, script, out, "--seed", str(seed)]
    for k, v in sizes.items():
        args += [k, str(v)]
    return subprocess.run(args, capture_output=True, text=True)


def read_jsonl(path):
    """The JSON objects of a file's lines; a line that is not JSON is recorded as a failure."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                failures.append(f"{path}:{n}: not JSON ({e})")
    return rows


def check_seeded(files, first, same, other, differ):
    """Determinism: each of `files` has the same bytes in the folders `first` and `same` (two runs
    with one seed); each of `differ` has other bytes in `other` (a run with another seed)."""
    for f in files:
        with open(os.path.join(first, f), "rb") as a, open(os.path.join(same, f), "rb") as b:
            check(a.read() == b.read(), f"{f} differs between two runs with the same seed")
    for f in differ:
        with open(os.path.join(first, f), "rb") as a, open(os.path.join(other, f), "rb") as b:
            check(a.read() != b.read(), f"another seed gives the same {f}")


def report(name):
    """Prints the failures (the first 50) or that all checks passed; the exit status, 1 or 0."""
    if failures:
        print(f"{name}: {len(failures)} failure(s)")
        for f in failures[:50]:
            print("  " + f)
        return 1
    print(f"{name}: all checks passed")
    return 0
