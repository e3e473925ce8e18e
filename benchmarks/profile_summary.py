"""Summarise a py-spy raw profile of a bench consumer (`python -m benchmarks --profile py-spy`).

Keeps only samples of the consumer loop (after start-up) and prints the share of samples
per function, inclusive and self:

    .venv/bin/python -m benchmarks.profile_summary benchmarks/runs/profile-c.collapsed
"""

from __future__ import annotations

import re
import sys
from collections import Counter


def main(path: str, top: int = 40) -> None:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    with open(path) as fh:
        for line in fh:
            stack, _, count = line.rstrip().rpartition(" ")
            joined = stack
            if "Runner.run (asyncio" not in joined or "_pomocore_runner" in joined:
                continue  # start-up, imports, connection set-up
            if "runtime (" in joined:
                continue
            n = int(count)
            total += n
            names = [re.sub(r" \(.*", "", f) for f in stack.split(";")]
            for name in set(names):
                inclusive[name] += n
            own[names[-1]] += n
    print(f"samples in the consumer loop: {total}")
    print("--- inclusive ---")
    for name, n in inclusive.most_common(top):
        print(f"{100 * n / total:5.1f}%  {name}")
    print("--- self ---")
    for name, n in own.most_common(top // 2):
        print(f"{100 * n / total:5.1f}%  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
