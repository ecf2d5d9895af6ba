"""Helpers shared by the checkers of the seeded data generators (check_rl_data.py and
check_eval_sets.py): a list of failures, a check that records one, a run of the generator, and a
JSONL reader that records unparsable lines. Standard library only."""
import json
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
