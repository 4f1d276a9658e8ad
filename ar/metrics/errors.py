"""The one error a metric backend raises: its data exists but cannot be read."""


class MetricsError(ValueError):
    """A one-line reason, shown in result.json as why the run is invalid."""
