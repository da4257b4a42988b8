#!/usr/bin/env python3
"""tools/soak.sh over real processes (one scheduler, two workers on loopback).

  soak_test.py short  MODEL   (MODEL "default": $LLORCH_DEFAULT_MODEL) the short soak of tools/test.sh: every request of
                              the mix ends as its action allows, none lost or
                              failed, KV empty after every round, idle heap flat,
                              and every process exits 0 on SIGTERM;
  soak_test.py leak   MODEL   the same soak with LLORCH_TEST_FAULT=leak:4096 in
                              the workers (4 KiB never freed per job) must fail,
                              naming both workers and neither the scheduler: the
                              leak check can catch a per-request leak of a few KiB.
"""
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from processes import TestFailure, check  # noqa: E402


def soak(model, tmp, requests, extra_env=None, extra_args=()):
    env = dict(os.environ, LLORCH_SOAK_DIR=tmp, **(extra_env or {}))
    argv = [os.path.join(ROOT, "tools", "soak.sh"),
            *(["--model-path", model] if model != "default" else []), "--requests", str(requests), "--concurrency", "8", *extra_args]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1200)
    print(result.stdout)
    print(result.stderr[-3000:], file=sys.stderr)
    lines = result.stdout.strip().splitlines()
    check(lines, "soak.sh printed nothing")
    return result, lines[-1]


def numbers(summary):
    found = re.search(r"failures (\d+), lost (\d+), KV left (\d+) B", summary)
    check(found, f"no counts in the summary: {summary}")
    return tuple(int(g) for g in found.groups())


SHORT_REQUESTS = 160  # ~2.5 min on 2 cores; tools/soak.sh --requests 5000 is the long one


def short(model, tmp):
    result, summary = soak(model, tmp, SHORT_REQUESTS)
    check(result.returncode == 0, f"soak.sh exited {result.returncode}: {summary}")
    check(summary.startswith(f"soak PASS: {SHORT_REQUESTS} requests"), summary)
    check(numbers(summary) == (0, 0, 0), summary)
    expected = re.search(r"as expected: (.*)", result.stdout).group(1)
    # The mix's every action happened and ended as it allows.
    for label in ("ok", "cancelled", "disconnected", "deadline"):
        check(re.search(rf"\b{label} \d+", expected), f"no '{label}' outcome: {expected}")


def leak(model, tmp):
    result, summary = soak(model, tmp, 300, {"LLORCH_TEST_FAULT": "leak:4096"},
                           ["--max_prompt_words", "100"])
    check(result.returncode != 0, f"a 4 KiB-per-job leak passed the soak: {summary}")
    check(summary.startswith("soak FAIL"), summary)
    check(numbers(summary) == (0, 0, 0), f"the leak should be the only failure: {summary}")
    check(re.search(r"memory grows in worker-a, worker-b$", result.stderr.strip()),
          f"the workers, and only they, should be named:\n{result.stderr[-500:]}")
    for name in ("worker-a", "worker-b"):
        growth = float(re.search(rf"{name} ([\d.]+)", summary).group(1))
        check(3.5 < growth < 4.5, f"{name} grows {growth} KiB/request; 4 leaked per job")


def main():
    mode, model = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix=f"llorch-soak-{mode}-") as tmp:
        try:
            {"short": short, "leak": leak}[mode](model, tmp)
        except TestFailure as failure:
            print(f"FAIL: {failure}", file=sys.stderr)
            return 1
    print(f"soak {mode}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
