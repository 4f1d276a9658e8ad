"""Train the regressor.

    python -m litproj.cli --lr 1e-3 --max_epochs 10
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from litproj.data import RegressionDataModule
from litproj.model import Regressor


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max_epochs", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--activation", default="relu", help="relu, tanh or gelu")
    p.add_argument("--num_samples", type=int, default=2048)
    p.add_argument("--val_fraction", type=float, default=0.2)
    p.add_argument("--log_dir", default="logs")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    pl.seed_everything(args.seed, workers=True)

    datamodule = RegressionDataModule(num_samples=args.num_samples, val_fraction=args.val_fraction,
                                      batch_size=args.batch_size, seed=args.seed)
    model = Regressor(num_features=datamodule.hparams.num_features, hidden=args.hidden,
                      activation=args.activation, lr=args.lr)

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.max_epochs,
        logger=CSVLogger(save_dir=args.log_dir, name="lit"),
        callbacks=[ModelCheckpoint(monitor="val_loss", mode="min", save_last=True, save_top_k=1)],
        enable_progress_bar=False,
        log_every_n_steps=10,
        deterministic=True,
    )
    trainer.fit(model, datamodule=datamodule)
    print(f"best val_loss {trainer.checkpoint_callback.best_model_score:.4f} "
          f"({trainer.checkpoint_callback.best_model_path})")


if __name__ == "__main__":
    main()
