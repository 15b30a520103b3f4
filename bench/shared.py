"""What the benchmarks share: the request they send, percentiles, the CPU time of the
stack's processes, the machine they ran on, and their sections of bench/results.md
(each script rewrites only its own)."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any

import psutil

from tripkit import __version__
from tripkit.devstack.stack import LocalStack


def preferences(bundles: int) -> dict[str, Any]:
    """The generation request both benchmarks send (camelCase, as the API takes it)."""
    return {
        "interests": ["food", "museums"],
        "tripLengthDays": 3,
        "budget": 1500,
        "bundleCount": bundles,
    }


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def cpu_seconds(stack: LocalStack) -> dict[str, float]:
    """CPU time (user + system) used so far by each service process and its children."""
    used = {}
    for name, service in stack.services.items():
        if service.proc is None:
            continue
        try:
            proc = psutil.Process(service.proc.pid)
            procs = [proc, *proc.children(recursive=True)]
            used[name] = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
        except psutil.Error:
            used[name] = math.nan
    return used


def machine() -> str:
    """What the numbers were measured on."""
    return (
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"nproc {os.cpu_count()}, Python {platform.python_version()}, tripkit {__version__}"
    )


def write_section(path: Path, name: str, text: str) -> None:
    """Replace the section ``name`` of ``path`` (between its markers) with ``text``,
    or append it; the other sections are left as they are."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else ""
    if start in old and end in old:
        before, rest = old.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        new = before + block + ("\n" + after if after else "")
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block
    path.write_text(new)
