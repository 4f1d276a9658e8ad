"""A tiny causal language model trained on synthetic token sequences."""
