"""Sottovoce: a local, always-on voice assistant (the service package)."""

__version__ = "0.1.0"
