"""A small MLP classifier."""

from __future__ import annotations

from torch import nn


class MLP(nn.Module):
    def __init__(self, num_features: int, hidden: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        if hidden <= 0:
            raise ValueError(f"hidden size must be positive, got {hidden}")
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.net(x)
