"""A synthetic regression problem: y = sin(x @ w1) @ w2 + noise."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


def make_regression(num_samples: int, num_features: int, noise: float, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, num_features, generator=g)
    w1 = torch.randn(num_features, 16, generator=g) / num_features**0.5
    w2 = torch.randn(16, 1, generator=g)
    y = torch.sin(2.0 * x @ w1) @ w2 + noise * torch.randn(num_samples, 1, generator=g)
    return TensorDataset(x, y)


class RegressionDataModule(pl.LightningDataModule):
    def __init__(self, num_features: int = 8, num_samples: int = 2048, val_fraction: float = 0.2,
                 noise: float = 0.1, batch_size: int = 64, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        full = make_regression(hp.num_samples, hp.num_features, hp.noise, hp.seed)
        n_val = int(len(full) * hp.val_fraction)
        if not 0 < n_val < len(full):
            raise ValueError(f"val_fraction={hp.val_fraction} leaves no train or no validation samples")
        x, y = full.tensors
        self.train_set = TensorDataset(x[n_val:], y[n_val:])
        self.val_set = TensorDataset(x[:n_val], y[:n_val])

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.hparams.seed)
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True, generator=g)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=512)
