"""False- and true-advance rates of the loop's verdict rules over a simulated night, with and
without the noise rules (baseline repeats + noise_k, confirmation). Run:
`uv run python bench/bench_noise.py [--runs 200] [--nights 20] [--sigma 0.05] [--seed 0]`.

No training runs: a synthetic objective (direction min) reads true_value + gauss(0, sigma). The
decisions are ar's own pure functions, in the order `ar.judge.finalize` applies them:
`ar.verdict.is_better` against the floor `max(min_gain(min_delta, k, sigma), min_rel_delta*|best|)`
(`ar.verdict.noise_floor`), sigma from `ar.noise.spread` of the R baseline runs (whose mean is the
first best), and with confirm C a candidate that beats the best is re-run C more times and advances
only if the mean of its C+1 runs beats the best by the floor (the best's value is then that mean).

A night is --runs runs, every run counted (baseline repeats and confirmations too, as max_runs
does); a series cut off by the budget does not advance. Each proposal is a null edit (true value
unchanged, 80%) or a real improvement (true value lower by 3 sigma, 20%); the proposal sequence of a
night is the same in every configuration. A false advance is an advance whose true value is not
better than that of the best it replaced; false-advance rate = false advances / null proposals,
true-advance rate = advances of real improvements / real proposals. Means over --nights nights.
"""

from __future__ import annotations

import argparse
import random
import statistics
from typing import NamedTuple

from ar.noise import min_gain, spread
from ar.verdict import is_better, noise_floor

DIRECTION = "min"
TRUE_START = 1.0  # true value of the baseline
REAL_FRACTION = 0.2  # share of proposals that are real improvements
STEP_SIGMAS = 3.0  # a real improvement lowers the true value by this many sigma


class Config(NamedTuple):
    name: str
    repeats: int  # baseline repeats R (1: a single baseline run, sigma unknown)
    noise_k: float
    confirm: int  # C more runs of an apparent gain
    min_delta: float = 0.0
    min_rel_delta: float = 0.0


CONFIGS = (
    Config("plain greedy (min_delta 0)", 1, 0.0, 0),
    Config("repeats 3, k=2", 3, 2.0, 0),
    Config("repeats 3, k=2, confirm 2", 3, 2.0, 2),
    Config("confirm 2 only (sigma unknown)", 1, 0.0, 2),
)


def night(config: Config, runs: int, sigma: float, seed: int) -> dict:
    edits = random.Random(seed * 2 + 1)  # which proposals are real: the same in every configuration
    noise = random.Random(seed * 2)

    def measure(true: float) -> float:
        return true + noise.gauss(0.0, sigma)

    used = 0
    baseline = []
    while used < runs and len(baseline) < config.repeats:
        baseline.append(measure(TRUE_START))
        used += 1
    best, best_true = sum(baseline) / len(baseline), TRUE_START  # the first run sets the best; repeats make it their mean
    measured = spread(baseline)
    delta = min_gain(config.min_delta, config.noise_k, measured)
    step = STEP_SIGMAS * sigma
    counts = {"proposals": 0, "null": 0, "real": 0, "advances": 0, "false": 0, "true": 0}
    while used < runs:
        real = edits.random() < REAL_FRACTION
        true = best_true - step if real else best_true
        counts["proposals"] += 1
        counts["real" if real else "null"] += 1
        values = [measure(true)]
        used += 1
        advanced = is_better(values[0], best, DIRECTION, delta, config.min_rel_delta)
        if advanced and config.confirm:
            while used < runs and len(values) < config.confirm + 1:
                values.append(measure(true))
                used += 1
            mean = sum(values) / len(values)
            advanced = len(values) == config.confirm + 1 and is_better(mean, best, DIRECTION, delta, config.min_rel_delta)
        if not advanced:
            continue
        counts["advances"] += 1
        counts["false"] += not is_better(true, best_true, DIRECTION)  # truly no better than the best it replaced
        counts["true"] += real
        best, best_true = sum(values) / len(values), true
    return {
        **counts,
        "false_rate": counts["false"] / counts["null"] if counts["null"] else 0.0,
        "true_rate": counts["true"] / counts["real"] if counts["real"] else 0.0,
        "final_true": best_true,
        "runs": used,
        "floor": noise_floor(best, delta, config.min_rel_delta),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200, help="runs per night, every run counted")
    parser.add_argument("--nights", type=int, default=20, help="nights (seeds) averaged")
    parser.add_argument("--sigma", type=float, default=0.05, help="stdev of the metric's noise")
    parser.add_argument("--seed", type=int, default=0, help="first night's seed")
    args = parser.parse_args()
    step = STEP_SIGMAS * args.sigma
    print(f"## Verdict rules over a simulated night: {args.runs} runs, sigma {args.sigma:g}, "
          f"{REAL_FRACTION:.0%} real improvements of {step:g} ({STEP_SIGMAS:g} sigma), "
          f"mean of {args.nights} nights (seeds {args.seed}..{args.seed + args.nights - 1})\n")
    print("| rules | proposals | null / real | advances | false advances | false-advance rate "
          "| true advances | true-advance rate | final true best | floor at end | runs used |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for config in CONFIGS:
        rows = [night(config, args.runs, args.sigma, args.seed + i) for i in range(args.nights)]
        m = {key: statistics.fmean(row[key] for row in rows) for key in rows[0]}
        print(f"| {config.name} | {m['proposals']:.1f} | {m['null']:.1f} / {m['real']:.1f} | {m['advances']:.2f} "
              f"| {m['false']:.2f} | {m['false_rate']:.1%} | {m['true']:.2f} | {m['true_rate']:.1%} "
              f"| {m['final_true']:.4f} | {m['floor']:.4f} | {m['runs']:.0f} |")
    print(f"\nTrue value starts at {TRUE_START:g}; each true advance lowers it by {step:g}. "
          "False advances are null edits kept as if they had helped.")


if __name__ == "__main__":
    main()
