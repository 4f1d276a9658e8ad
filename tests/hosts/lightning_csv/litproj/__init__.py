"""Small Lightning regression project on synthetic data."""
