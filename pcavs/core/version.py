"""The package version, read by pyproject.toml (setuptools' `attr:`) and shown by `pcavs --version`."""

__version__ = "0.2.0"
