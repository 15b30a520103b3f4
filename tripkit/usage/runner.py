"""Run the usage report: ``notebooks/03_usage_report.ipynb`` with papermill, then HTML.

Why a notebook: the report stays something an analyst can open, rerun and change, while
a scheduled run (``tripkit report`` from cron) leaves a dated, executed copy beside a
code-free HTML page for everyone else.

Names: ``<output_dir>/usage-YYYY-MM-DD.ipynb`` and ``.html`` (the UTC date of the run).
A second run on the same day never silently replaces the first: it is written as
``usage-YYYY-MM-DD-2``, ``-3``, ...; ``overwrite=True`` (``--overwrite``) replaces that
day's report instead.

Failure: papermill writes "completed" metadata even after a cell timeout, so that is
never trusted. A raised exception, or an error output in any cell, is a
:class:`ReportError` naming the cell and the error; the partial notebook is kept as
``usage-YYYY-MM-DD.failed.ipynb`` and no HTML is written.
"""

from __future__ import annotations

import html
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from tripkit.errors import TripkitError
from tripkit.paths import project_root, reports_dir

NOTEBOOK = "03_usage_report.ipynb"
#: The HTML page: nbconvert's "basic" template (outputs only) in a small stylesheet, since
#: the "lab" template inlines ~280 KB of JupyterLab CSS into every report.
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; }}
main {{ max-width: 1150px; margin: 2em auto; padding: 0 1em; }}
h2 {{ margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }}
.anchor-link {{ display: none; }}
table.dataframe {{ border-collapse: collapse; font-size: 13px; margin: .5em 0 1em; }}
table.dataframe th, table.dataframe td {{ border: 1px solid #ddd; padding: 4px 8px; }}
table.dataframe td {{ text-align: right; vertical-align: top; }}
table.dataframe tbody th {{ text-align: left; vertical-align: top; }}
table.dataframe thead th {{ background: #f3f3f3; }}
table.dataframe tbody tr:nth-child(even) {{ background: #fafafa; }}
img {{ max-width: 100%; }}
code {{ background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }}
</style></head>
<body><main>
{body}
</main></body></html>
"""
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Papermill's log lines repeat what ReportError says; without a handler of their own they
# would reach stderr through logging's last resort (noise in cron mail). Applications that
# configure logging still get them.
logging.getLogger("papermill").addHandler(logging.NullHandler())


class ReportError(TripkitError):
    """The report could not be made; the message says which cell failed and why."""


@dataclass(frozen=True)
class ReportPaths:
    """The executed notebook and its code-free HTML."""

    notebook: Path
    html: Path


def find_notebook(notebook: str | Path | None = None) -> Path:
    """The report notebook: ``notebook`` if given, else ``notebooks/03_usage_report.ipynb``
    under the project root (cron runs from the checkout), else beside the package."""
    if notebook is not None:
        candidates = [Path(notebook)]
    else:
        candidates = [
            project_root() / "notebooks" / NOTEBOOK,
            Path(__file__).resolve().parents[2] / "notebooks" / NOTEBOOK,
        ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ReportError(
        f"The report notebook was not found (looked for {candidates[0]}).",
        remedy="Run from the tripkit checkout, or pass --notebook PATH.",
    )


def report_paths(output_dir: str | Path, day: date, *, overwrite: bool = False) -> ReportPaths:
    """The dated names for ``day``: the first free ``usage-DAY[-N]`` unless ``overwrite``."""
    out = Path(output_dir)
    base = f"usage-{day:%Y-%m-%d}"
    n = 1
    while True:
        stem = base if n == 1 else f"{base}-{n}"
        paths = ReportPaths(out / f"{stem}.ipynb", out / f"{stem}.html")
        if overwrite or not (paths.notebook.exists() or paths.html.exists()):
            return paths
        n += 1


def parse_value(text: str) -> Any:
    """A ``-p NAME VALUE`` value as papermill's CLI reads it: True/False/None, int, float,
    else the string."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def notebook_parameters(notebook: str | Path) -> dict[str, Any]:
    """The parameters the notebook's ``parameters`` cell declares, with their defaults."""
    import papermill

    found: dict[str, Any] = papermill.inspect_notebook(str(notebook))
    return found


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _error_outputs(nb: Any) -> list[tuple[int, dict[str, Any]]]:
    return [
        (index, output)
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]


def run_report(
    output_dir: str | Path | None = None,
    *,
    parameters: Mapping[str, Any] | None = None,
    kernel_name: str | None = None,
    timeout: int = 600,
    notebook: str | Path | None = None,
    overwrite: bool = False,
    day: date | None = None,
) -> ReportPaths:
    """Execute the report notebook with ``parameters`` into ``output_dir`` and convert it to
    HTML without code; returns both paths. ``timeout`` is per cell (seconds). Raises
    :class:`ReportError` on any failure (unknown parameter, failed cell, timeout)."""
    import nbconvert
    import nbformat as _nbformat
    import papermill

    # nbformat's and nbconvert's functions are not annotated.
    nbformat: Any = _nbformat
    html_exporter: Any = nbconvert.HTMLExporter

    source = find_notebook(notebook)
    # Papermill writes values as Python literals: a Path would not survive that.
    params = {
        k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in (parameters or {}).items()
    }
    known = notebook_parameters(source)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ReportError(
            f"Unknown report parameter(s): {', '.join(unknown)}.",
            remedy=f"The notebook takes: {', '.join(known)}.",
        )
    out = Path(output_dir) if output_dir is not None else reports_dir()
    out.mkdir(parents=True, exist_ok=True)
    paths = report_paths(out, day or datetime.now(UTC).date(), overwrite=overwrite)
    partial = out / f".{paths.notebook.stem}.partial.ipynb"
    failed = paths.notebook.with_suffix(".failed.ipynb")
    try:
        papermill.execute_notebook(
            str(source),
            str(partial),
            parameters=params,
            kernel_name=kernel_name,
            progress_bar=False,
            log_output=False,
            request_save_on_cell_execute=True,  # a timeout still leaves the partial notebook
            execution_timeout=max(1, int(timeout)),
            cwd=os.getcwd(),
            # the kernel logs to our stderr; keep it quiet (cron mails any output), errors in
            # cells are in the notebook and raise here anyway
            extra_arguments=["--log-level=CRITICAL"],
        )
    except papermill.PapermillExecutionError as exc:
        _keep(partial, failed)
        raise ReportError(
            f"The usage report failed in cell {exc.exec_count}: {exc.ename}: "
            f"{_ANSI.sub('', str(exc.evalue))}",
            remedy=f"The partial notebook is {_shown(failed)}.",
        ) from None
    except Exception as exc:  # a cell timeout, a kernel that died or never started
        _keep(partial, failed)
        message = _ANSI.sub("", str(exc)).strip().splitlines()
        raise ReportError(
            f"The usage report did not finish: {type(exc).__name__}: "
            f"{message[0] if message else ''}",
            remedy=f"The partial notebook (if any) is {_shown(failed)}; raise --timeout "
            "if a cell needs longer.",
        ) from None
    nb = nbformat.read(str(partial), as_version=4)
    errors = _error_outputs(nb)
    if errors:
        _keep(partial, failed)
        index, output = errors[0]
        raise ReportError(
            f"The usage report has an error in cell {index}: {output.get('ename')}: "
            f"{_ANSI.sub('', str(output.get('evalue')))}",
            remedy=f"See {_shown(failed)}.",
        )
    meta = nb.metadata.get("papermill", {})
    meta["input_path"], meta["output_path"] = _shown(source), _shown(paths.notebook)
    nbformat.write(nb, str(paths.notebook))
    partial.unlink()
    exporter = html_exporter(
        template_name="basic",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(nb)
    title = f"tripkit usage report {paths.notebook.stem.removeprefix('usage-')}"
    page = _PAGE.format(title=html.escape(title), body=body)
    paths.html.write_text(page, encoding="utf-8")
    return paths


def _keep(partial: Path, failed: Path) -> None:
    if partial.exists():
        partial.replace(failed)
