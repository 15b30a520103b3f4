"""Inngest's duration strings (``"30s"``, ``"1h30m"``, ``"2d"``) as seconds.

The SDK writes periods and timeouts this way in the sync body and in step options; the
real server reads them with go-str2duration, which adds days and weeks to Go's units.
"""

from __future__ import annotations

import re

_UNITS = {
    "w": 7 * 86400.0,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|w|d|h|m|s)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ValueError naming the text when it is not a duration."""
    compact = text.strip()
    parts = _PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration (like '30s', '5m', '1h30m' or '2d')")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)
