"""The setup checks as notebook 01 shows them: a table per step, a verdict nbval can
compare, and the troubleshooting entries that apply.

The tables are plain HTML written here rather than pandas' Styler, which does not escape
its cells (a remedy naming ``signkey-<env>-<hex>`` lost its ``<env>``). Every text is
escaped; a status is a word on a coloured badge (PASS, WARN, FAIL, SKIP), readable with
no emoji font and by the colour-blind; styles are inline, as JupyterLab keeps those in
an untrusted notebook and drops ``<style>`` elements.

Their plain-text form (``repr``, what papermill logs and a terminal show) is
:func:`verdict`'s; nbval compares that, printed by its own cell, because the HTML holds
latencies and ports that change from run to run.

Not named ``display``: a notebook that imported it would hide IPython's ``display()``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from tripkit import checks
from tripkit.checks import CheckResult, CheckStatus

__all__ = ["MARK_COLOURS", "HtmlTable", "mark", "show_checks", "show_diagnoses", "verdict"]

#: Badge colours (white text on each: contrast 4.5:1 or more).
MARK_COLOURS = {
    CheckStatus.PASS: "#1a7f37",
    CheckStatus.WARN: "#9a6700",
    CheckStatus.FAIL: "#cf222e",
    CheckStatus.SKIP: "#6e7781",
}
_TABLE = "border-collapse:collapse;margin:.4em 0 1em;font-size:13px;"
_CELL = "text-align:left;vertical-align:top;padding:4px 8px;border:1px solid #d0d7de;"
_HEAD = _CELL + "background-color:#f6f8fa;font-weight:600;"


def mark(status: CheckStatus, word: str | None = None) -> str:
    """A status as an HTML badge: the word (default: the status, upper case) in white on
    the status's colour."""
    text = html.escape(word if word is not None else status.value.upper())
    return (
        f'<span style="background-color:{MARK_COLOURS[status]};color:#fff;font-weight:600;'
        f'padding:1px 6px;border-radius:3px;white-space:nowrap">{text}</span>'
    )


@dataclass(frozen=True)
class HtmlTable:
    """A table Jupyter shows as HTML; ``text`` is its plain-text form.

    ``rows`` hold plain text, escaped when rendered; ``marks`` maps (row, column) to a
    cell's ready-made badge HTML (from :func:`mark`).
    """

    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    text: str
    marks: dict[tuple[int, int], str] | None = None

    def _repr_html_(self) -> str:
        marks = self.marks or {}
        head = "".join(f'<th style="{_HEAD}">{html.escape(c)}</th>' for c in self.columns)
        body = []
        for i, row in enumerate(self.rows):
            cells = "".join(
                f'<td style="{_CELL}">{marks.get((i, j)) or html.escape(value)}</td>'
                for j, value in enumerate(row)
            )
            body.append(f"<tr>{cells}</tr>")
        return (
            f'<table style="{_TABLE}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
        )

    def __repr__(self) -> str:
        return self.text


def show_checks(results: list[CheckResult]) -> HtmlTable:
    """The results as a table: the check, its status, what was measured, what to do next."""
    rows = [[r.id, r.status.value.upper(), r.detail, r.remedy] for r in results]
    marks = {(i, 1): mark(r.status) for i, r in enumerate(results)}
    return HtmlTable(["check", "status", "detail", "remedy"], rows, verdict(results), marks)


def verdict(results: list[CheckResult]) -> str:
    """One line per check, status only: stable enough for nbval to compare."""
    return "\n".join(f"{r.status.value:<4}  {r.id}" for r in results)


def show_diagnoses(results: list[CheckResult]) -> HtmlTable:
    """The guide's troubleshooting entries, and whether the failures point at each."""
    diagnoses = checks.diagnose(results)
    rows = [
        [d.entry, "APPLIES" if d.applies else "no", ", ".join(d.failing), d.advice]
        for d in diagnoses
    ]
    marks = {
        (i, 1): mark(CheckStatus.FAIL, "APPLIES") for i, d in enumerate(diagnoses) if d.applies
    }
    text = "\n".join(f"{'applies' if d.applies else 'no':<7}  {d.entry}" for d in diagnoses)
    return HtmlTable(["entry", "applies", "failing checks", "advice"], rows, text, marks)
