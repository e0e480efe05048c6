"""The package version: bumped whenever a shipped model or a file format changes."""

__version__ = "0.18.0"
