"""autoresearch helper runtime."""

__version__ = "0.1.0"  # pinned equal to pyproject.toml and the plugin manifests by a test
