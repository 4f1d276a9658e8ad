"""Train a small MLP classifier on synthetic data with Hugging Face Accelerate.

Single process:
    python acc_train.py --lr 1e-3
Two CPU processes (gloo; no accelerate config file needed):
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no --main_process_port 0 acc_train.py --lr 1e-3
"""
import argparse
import math
import os

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--val_fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", default="acc_out")
    return p.parse_args()


def make_dataset(seed, n=2560, n_features=12, n_classes=5):
    """Gaussian class blobs around random centres; overlapping, so val_loss > 0."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, n_features, generator=g) * 1.2
    y = torch.randint(0, n_classes, (n,), generator=g)
    x = centres[y] + torch.randn(n, n_features, generator=g)
    return TensorDataset(x, y)


def split(dataset, val_fraction, seed):
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    n_val = math.ceil(len(dataset) * val_fraction)
    return random_split(
        dataset, [len(dataset) - n_val, n_val], generator=torch.Generator().manual_seed(seed)
    )


def main():
    args = parse_args()
    torch.set_num_threads(1)
    accelerator = Accelerator()
    set_seed(args.seed)

    train_ds, val_ds = split(make_dataset(args.seed), args.val_fraction, args.seed)
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True)
    val_loader = DataLoader(val_ds, batch_size=256)

    n_features = train_ds.dataset.tensors[0].shape[1]
    model = nn.Sequential(
        nn.Linear(n_features, args.hidden), nn.GELU(),
        nn.Linear(args.hidden, args.hidden), nn.GELU(),
        nn.Linear(args.hidden, 5),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    model, optimizer, train_loader, val_loader = accelerator.prepare(
        model, optimizer, train_loader, val_loader
    )
    loss_fn = nn.CrossEntropyLoss()

    accelerator.print(
        f"processes={accelerator.num_processes} device={accelerator.device} "
        f"lr={args.lr} epochs={args.epochs}"
    )
    os.makedirs(args.output_dir, exist_ok=True)
    best = float("inf")
    for epoch in range(1, args.epochs + 1):
        model.train()
        running = 0.0
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            accelerator.backward(loss)
            optimizer.step()
            running += loss.item()
        train_loss = running / len(train_loader)

        model.eval()
        total, count = 0.0, 0
        for x, y in val_loader:
            with torch.no_grad():
                logits = model(x)
            logits, y = accelerator.gather_for_metrics((logits, y))
            total += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            count += len(y)
        val_loss = total / count
        accelerator.print(f"epoch {epoch} train_loss={train_loss:.4f} val_loss={val_loss:.5f}")

        if val_loss < best:
            best = val_loss
            accelerator.wait_for_everyone()
            # accelerator.save writes on the main process only.
            accelerator.save(accelerator.unwrap_model(model).state_dict(),
                             os.path.join(args.output_dir, "best_model.pt"))

    accelerator.wait_for_everyone()
    accelerator.save_state(os.path.join(args.output_dir, "last_state"))
    accelerator.print(f"best val_loss={best:.5f}; saved to {args.output_dir}/")
    accelerator.end_training()


if __name__ == "__main__":
    main()
