"""The single source of the package version; the container image tag derives from it."""

__version__ = "0.1.0"
