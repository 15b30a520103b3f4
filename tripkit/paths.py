"""Where the project's files are: ``.env.local``, ``reports/``, the history CSV.

Every entry point runs from a different directory: the shell and cron from the checkout
(or the deployment folder), papermill from wherever it was started, a JupyterLab kernel
from ``notebooks/``. Relative paths would each resolve somewhere else (the kernel read no
``.env.local`` and wrote a second ``reports/`` under ``notebooks/``), so they all resolve
against one project root, found the same way everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Set to a folder to use it as the project root, whatever the working directory.
ROOT_VAR = "TRIPKIT_ROOT"
#: A folder holding one of these is a project root: the checkout (``pyproject.toml``) or
#: a deployment folder (its ``.env.local``/``.env``).
MARKERS = ("pyproject.toml", ".env.local", ".env")
#: The history CSV that ``tripkit harvest`` writes and the usage report reads.
HISTORY_CSV = Path("reports") / "data" / "runs.csv"


def project_root(start: str | Path | None = None) -> Path:
    """``$TRIPKIT_ROOT`` if set, else the nearest folder from ``start`` (default: the
    working directory) upwards that holds a :data:`MARKERS` file, else ``start`` itself."""
    override = os.environ.get(ROOT_VAR, "").strip()
    if override:
        return Path(override).expanduser().resolve()
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).is_file() for marker in MARKERS):
            return folder
    return here


def in_root(path: str | Path) -> Path:
    """``path`` itself when absolute, else the same path under :func:`project_root`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def reports_dir() -> Path:
    """Where ``tripkit report`` writes (``<root>/reports``)."""
    return in_root("reports")


def history_csv() -> Path:
    """The history CSV: ``$TRIPKIT_HISTORY_CSV`` if set, else ``<root>/reports/data/runs.csv``."""
    return in_root(os.environ.get("TRIPKIT_HISTORY_CSV") or HISTORY_CSV)


def shown(path: str | Path) -> str:
    """``path`` as people read it: relative to the project root when it is inside."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(project_root()))
    except ValueError:
        return str(path)
