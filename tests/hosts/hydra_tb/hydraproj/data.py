"""Synthetic regression data: a fixed random "teacher" network plus noise."""
import torch
from torch.utils.data import DataLoader, TensorDataset


def make_loaders(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    n_features = cfg.data.n_features
    # Teacher: y = tanh(x @ w1) @ w2, fixed by the seed.
    w1 = torch.randn(n_features, 8, generator=g) / n_features**0.5
    w2 = torch.randn(8, 1, generator=g) / 8**0.5

    def sample(n):
        x = torch.randn(n, n_features, generator=g)
        y = torch.tanh(x @ w1) @ w2 + cfg.data.noise * torch.randn(n, 1, generator=g)
        return TensorDataset(x, y)

    train_ds = sample(cfg.data.n_train)
    val_ds = sample(cfg.data.n_val)
    train_loader = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed + 1),
    )
    val_loader = DataLoader(val_ds, batch_size=256)
    return train_loader, val_loader
