"""Errors users act on. Kept free of heavy imports: data preparation raises them without loading torch."""


class ConfigError(ValueError):
    """A configuration the job cannot run with; raised before any compute, naming the bad value."""
