"""Measure what one preference method costs per training step, in a fresh process.

03-Compare_with_DPO runs this once per method, so each peak-memory number belongs to one method only
(inside one long-lived kernel, memory freed by an earlier run would blur the next one).

    python measure_step_cost.py --method dpo [--reference-copy] --out outputs/cost/dpo.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common_utils import atomic_file, lab_sizes
from common_utils.training.preference import preference_step_cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["dpo", "orpo"], required=True)
    parser.add_argument("--reference-copy", action="store_true",
                        help="DPO only: give DPOTrainer a second copy of the weights as its reference model")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps; the first is excluded from the timing")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the result (written atomically)")
    args = parser.parse_args()
    sizes = lab_sizes(Path(__file__).resolve().parent)  # this lab's lab.yaml, wherever the script is run from
    result = preference_step_cost(args.method, sizes, steps=args.steps, reference_copy=args.reference_copy)
    with atomic_file(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
