"""Train an MLP classifier and track the run with MLflow.

    python train_mlflow.py --lr 1e-3 --epochs 8

The tracking server / store comes from MLflow's usual configuration (MLFLOW_TRACKING_URI etc.).
"""

from __future__ import annotations

import argparse
import os

import mlflow
import torch
from torch import nn

from mlapp.data import get_loaders
from mlapp.model import MLP

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train an MLP classifier on synthetic clusters.")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--optimizer", default="sgd", help="sgd or adam")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="checkpoints", help="where model.pt is written")
    p.add_argument("--experiment", default="mlapp")
    return p.parse_args()


def evaluate(model: nn.Module, loader) -> tuple[float, float]:
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            logits = model(x)
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            n += len(y)
    return loss_sum / n, correct / n


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    train_loader, val_loader = get_loaders(args.batch_size, args.seed)
    num_features = train_loader.dataset.tensors[0].shape[1]
    model = MLP(num_features, args.hidden, num_classes=4)
    if args.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {args.optimizer!r}; choose from {sorted(OPTIMIZERS)}")
    optimizer = OPTIMIZERS[args.optimizer](model.parameters(), lr=args.lr)
    os.makedirs(args.out, exist_ok=True)

    mlflow.set_experiment(args.experiment)
    with mlflow.start_run():
        mlflow.log_params(vars(args))
        for epoch in range(1, args.epochs + 1):
            model.train()
            for x, y in train_loader:
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
            val_loss, val_acc = evaluate(model, val_loader)
            mlflow.log_metric("train_loss", loss.item(), step=epoch)
            mlflow.log_metric("val_loss", val_loss, step=epoch)
            mlflow.log_metric("val_acc", val_acc, step=epoch)
            torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()},
                       os.path.join(args.out, "model.pt"))
            print(f"epoch {epoch}/{args.epochs}  train_loss {loss.item():.4f}  "
                  f"val_loss {val_loss:.4f}  val_acc {val_acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
