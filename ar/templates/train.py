RUN_NOTE = "baseline"  # what this version tries; the knobs follow (`run --set NAME=VALUE` changes them)
LEARNING_RATE = 0.005
EPOCHS = 10
BATCH_SIZE = 64

# The loop edits this file only (see program.md for the scope).
# The metric ar reads from this program's output: a line `name=value`.
PRIMARY_METRIC = __METRIC__
DIRECTION = __DIRECTION__

import os  # noqa: E402
import random  # noqa: E402

from prepare import N_FEATURES, evaluate, load_data  # noqa: E402


def main():
    train, val = load_data()
    rng = random.Random(int(os.environ.get("AR_SEED", 0)))  # ar sets AR_SEED under --baseline-repeats / --confirm
    w = [0.0] * N_FEATURES
    b = 0.0

    def predict(x):
        return sum(wi * xi for wi, xi in zip(w, x)) + b

    for epoch in range(EPOCHS):
        rng.shuffle(train)
        for start in range(0, len(train), BATCH_SIZE):
            batch = train[start : start + BATCH_SIZE]
            grad_w = [0.0] * N_FEATURES
            grad_b = 0.0
            for x, y in batch:
                err = predict(x) - y
                for i, xi in enumerate(x):
                    grad_w[i] += 2.0 * err * xi / len(batch)
                grad_b += 2.0 * err / len(batch)
            w = [wi - LEARNING_RATE * g for wi, g in zip(w, grad_w)]
            b -= LEARNING_RATE * grad_b
        print(f"epoch {epoch} train_loss={evaluate(predict, train):.6f}")
    val_loss = evaluate(predict, val)
    score = val_loss if DIRECTION == "min" else 1.0 / (1.0 + val_loss)
    print(f"{PRIMARY_METRIC}={score:.6f}")


if __name__ == "__main__":
    main()
