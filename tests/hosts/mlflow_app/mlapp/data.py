"""Synthetic classification data: Gaussian clusters, a few per class, in a modest dimension."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset


def make_clusters(num_samples: int, num_features: int, num_classes: int, clusters_per_class: int,
                  spread: float, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes * clusters_per_class, num_features, generator=g) * 2.0
    which = torch.randint(0, len(centers), (num_samples,), generator=g)
    x = centers[which] + spread * torch.randn(num_samples, num_features, generator=g)
    y = which % num_classes
    return TensorDataset(x, y)


def get_loaders(batch_size: int, seed: int, num_features: int = 16, num_classes: int = 4,
                num_train: int = 2000, num_val: int = 500):
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    full = make_clusters(num_train + num_val, num_features, num_classes, clusters_per_class=3,
                         spread=1.6, seed=seed)
    x, y = full.tensors
    train = TensorDataset(x[:num_train], y[:num_train])
    val = TensorDataset(x[num_train:], y[num_train:])
    g = torch.Generator().manual_seed(seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=g),
            DataLoader(val, batch_size=512))
