"""tripkit: run a long AI trip-bundle generation as a durable background job."""

from __future__ import annotations

__version__ = "0.1.0"
