"""Model and data for a small classification app."""
