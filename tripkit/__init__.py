"""tripkit: run a long AI trip-bundle generation as a durable background job."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    #: The one version: pyproject.toml's, as installed (``tripkit --version``, the API).
    __version__ = version("tripkit")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
