"""Simulate the adaptive-seeds verdict (:mod:`bertscope.core.sequential`): the numbers behind docs/statistics.md.

    python tools/sequential_sim.py            # both tables, 2,000 repetitions each (about a minute of one core)
    python tools/sequential_sim.py --reps 500

Normal paired differences with standard deviation 1 (effects are in units of the per-seed spread). Table 1: the rate
of wrong decisions at the truths nearest the boundaries, with and without stopping for futility. Table 2: how often
a true claim is decided (supported) and the mean seeds a claim uses, with and without futility, at replicate's look
plans (paper 2: 3, 8 seeds; paper 1: 3, 8, 16; and 3, 6).
"""

from __future__ import annotations

import argparse

import numpy as np

from bertscope.core.sequential import LookPlan, sequential_verdict

#: (kind, true mean, tolerance, whether the claim holds): the truths nearest the verdict rule's boundaries
BOUNDARY_TRUTHS = [("better", 0.0, 0.0, False), ("worse", 0.0, 0.0, False), ("as_good", 0.5, 0.5, True),
                   ("as_good", 0.52, 0.5, False), ("no_worse", -0.5, 0.5, True), ("no_worse", -0.52, 0.5, False)]
#: (kind, true mean, tolerance): true claims, to measure how often each plan decides them
TRUE_CLAIMS = [("better", 1.0, 0.0), ("better", 1.5, 0.0), ("as_good", 0.0, 1.0), ("as_good", 0.0, 1.5),
               ("no_worse", 0.0, 1.0), ("no_worse", 0.0, 1.5)]


def _readings(plan: LookPlan, kind: str, mean: float, tolerance: float, reps: int, seed: int) -> list:
    draws = np.random.default_rng(seed).normal(mean, 1.0, size=(reps, plan.max_seeds))
    return [sequential_verdict(row, plan, kind, tolerance) for row in draws]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=2000)
    reps = parser.parse_args().reps
    print(f"## Wrong decisions (looks 2, 3, 4, 6, 9, 13, 20; {reps} repetitions)\n")
    print("| truth | wrong decision | rate, futility off | rate, futility on |\n|---|---|---|---|")
    for kind, mean, tolerance, holds in BOUNDARY_TRUTHS:
        rates = []
        for futility in (False, True):
            plan = LookPlan((2, 3, 4, 6, 9, 13, 20), futility=futility)
            wrong = "not supported" if holds else "supported"
            rates.append(sum(r.verdict == wrong for r in _readings(plan, kind, mean, tolerance, reps, 7)) / reps)
        print(f"| `{kind}`, mean {mean:g}, tolerance {tolerance:g} | {wrong} | {rates[0]:.3f} | {rates[1]:.3f} |")
    print(f"\n## True claims decided, and seeds used ({reps} repetitions)\n")
    print("| looks | claim | supported, futility off | on | mean seeds, off | on |\n|---|---|---|---|---|---|")
    for looks in ((3, 6), (3, 8), (3, 8, 16)):
        for kind, mean, tolerance in TRUE_CLAIMS:
            cells = []
            for futility in (False, True):
                readings = _readings(LookPlan(looks, futility=futility), kind, mean, tolerance, reps, 3)
                cells.append((sum(r.verdict == "supported" for r in readings) / reps,
                              float(np.mean([r.seeds_used for r in readings]))))
            claim = f"`{kind}`, mean {mean:g}" + (f", tolerance {tolerance:g}" if kind in ("as_good", "no_worse") else "")
            print(f"| {', '.join(map(str, looks))} | {claim} | {cells[0][0]:.3f} | {cells[1][0]:.3f} | "
                  f"{cells[0][1]:.2f} | {cells[1][1]:.2f} |")


if __name__ == "__main__":
    main()
