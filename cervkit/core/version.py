"""The package version: one place, read by ``cervkit.__version__``, run records and ``pyproject.toml``."""

__version__ = "0.1.0"
