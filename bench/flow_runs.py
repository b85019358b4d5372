"""Run the training flow ``--runs`` times in one process on the project at ``--root`` and write,
for each run, its wall time and the seconds each step reported (JSON to ``--out``).

The first call pays for the temporary Prefect server and the imports; later calls in the same
process show what a rerun costs once those are paid (with nothing changed: the no-op rerun).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from flows.training import training

    runs = []
    for _ in range(args.runs):
        began = time.perf_counter()
        stages = training(params="params.yaml", root=str(args.root))
        runs.append({"seconds": round(time.perf_counter() - began, 3),
                     "stages": [{k: s[k] for k in ("stage", "ran", "seconds")} for s in stages]})
    args.out.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
