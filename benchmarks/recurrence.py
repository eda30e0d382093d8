"""Training-step benchmark of the recurrence engines; the code lives in :mod:`irnn.bench`.

    python benchmarks/recurrence.py [--quick] [--out results/bench/recurrence.jsonl]   # same as `irnn bench`
"""

import sys

from irnn.bench import main

if __name__ == "__main__":
    sys.exit(main())
