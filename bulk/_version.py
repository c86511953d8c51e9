"""The package version, in a module of its own so that any module can import it
without importing the package's ``__init__`` (and so without an import cycle)."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
