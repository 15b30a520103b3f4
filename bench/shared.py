"""bench/results.md holds one section per benchmark; each script rewrites only its own."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from tripkit import __version__


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
