"""A tiny GPT-2 built from a config (random init, nothing downloaded)."""

from __future__ import annotations

from transformers import GPT2Config, GPT2LMHeadModel


def build_model(vocab_size: int, n_positions: int, n_embd: int, n_layer: int, n_head: int) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)
