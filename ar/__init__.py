"""autoresearch helper runtime."""
