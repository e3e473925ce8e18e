"""`python -m benchmarks.child SPEC`: one consumer process of a run (benchmarks.protocol).

Its own entry, apart from `python -m benchmarks`: the child imports only the variants, not
the orchestration (whose LLM workload loads the openai client, 25 MB that would show in
every variant's peak RSS column)."""

import sys

from benchmarks.protocol import ChildSpec
from benchmarks.variants import child_main

if __name__ == "__main__":
    sys.exit(child_main(ChildSpec.from_json(sys.argv[1])))
