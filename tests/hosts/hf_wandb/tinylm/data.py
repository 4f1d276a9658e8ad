"""Synthetic token sequences with structure a small causal LM can learn.

Each sequence is an arithmetic progression modulo the vocabulary size: a random start token
and a random stride, so after a couple of tokens the rest of the sequence is predictable.
A small fraction of tokens is replaced with random noise so the loss never reaches zero.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

PATTERNS = ("arithmetic", "repeat")


def generate(pattern: str, num_sequences: int, seq_len: int, vocab_size: int, noise: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab_size, (num_sequences, 1), generator=g)
    positions = torch.arange(seq_len).unsqueeze(0)
    if pattern == "arithmetic":
        stride = torch.randint(1, 8, (num_sequences, 1), generator=g)
        tokens = (start + stride * positions) % vocab_size
    elif pattern == "repeat":
        period = torch.randint(2, 6, (num_sequences, 1), generator=g)
        tokens = (start + positions % period) % vocab_size
    else:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {', '.join(PATTERNS)}")
    flip = torch.rand(tokens.shape, generator=g) < noise
    tokens[flip] = torch.randint(0, vocab_size, (int(flip.sum()),), generator=g)
    return tokens


class SequenceDataset(Dataset):
    def __init__(self, tokens: torch.Tensor):
        self.tokens = tokens

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        ids = self.tokens[idx]
        return {"input_ids": ids, "labels": ids.clone()}


def build_datasets(pattern: str, num_train: int, num_eval: int, seq_len: int, vocab_size: int, noise: float, seed: int):
    train = generate(pattern, num_train, seq_len, vocab_size, noise, seed)
    evals = generate(pattern, num_eval, seq_len, vocab_size, noise, seed + 1)
    return SequenceDataset(train), SequenceDataset(evals)
