"""Frozen data and metric contract of experiment __SLUG__: read-only during the loop.

train.py imports from here; `ar run` refuses to run once this file has changed.
"""

import math
import random

SEED = 1234
N_TRAIN = 512
N_VAL = 256
N_FEATURES = 8


def load_data():
    """(train, val) splits of a fixed synthetic regression task: lists of (features, target)."""
    rng = random.Random(SEED)
    weights = [rng.uniform(-2.0, 2.0) for _ in range(N_FEATURES)]

    def sample(n):
        rows = []
        for _ in range(n):
            x = [rng.gauss(0.0, 1.0) for _ in range(N_FEATURES)]
            y = sum(a * b for a, b in zip(x, weights)) + 0.5 * math.sin(3.0 * x[0]) + rng.gauss(0.0, 0.1)
            rows.append((x, y))
        return rows

    return sample(N_TRAIN), sample(N_VAL)


def evaluate(predict, rows):
    """Mean squared error of predict(features) over rows."""
    return sum((predict(x) - y) ** 2 for x, y in rows) / len(rows)
