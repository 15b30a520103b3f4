"""How the usage report's results look in Jupyter, and in its code-free HTML.

The wrappers carry Jupyter's ``_repr_*_`` methods themselves, so the report needs no
IPython import and no pyplot state; the formatters give every table the same "n/a",
"unlimited", dollars and byte units.
"""

from __future__ import annotations

import io
import math
import re
import zlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["Chart", "Markdown", "Table", "figure", "number", "size", "usd"]


class Markdown(str):
    """A string Jupyter shows as Markdown (no IPython import needed)."""

    def _repr_markdown_(self) -> str:
        return str(self)


class Table:
    """A DataFrame Jupyter shows in full (pandas' own HTML truncates long cells);
    ``.frame`` is the DataFrame itself.

    Its HTML: headers left-aligned over their columns, text columns left-aligned and
    numbers right-aligned, every cell escaped. The styles sit under an id derived from
    the columns, so the same table renders the same HTML each run (nbval compares it).
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def _repr_html_(self) -> str:
        frame = self.frame
        text = [i for i, c in enumerate(frame.columns) if frame[c].map(_is_text).any()]
        names = "|".join(map(str, [*frame.columns, *frame.index.names]))
        styler = (
            frame.style.format(_cell, na_rep="n/a", escape="html")
            .format_index(_cell, escape="html", axis=0)
            .format_index(_cell, escape="html", axis=1)
            .set_uuid(f"{zlib.crc32(names.encode()):08x}")
            .set_table_attributes('class="dataframe"')
            .set_table_styles(
                [{"selector": "th", "props": "text-align: left;"}]
                + [{"selector": f"td.col{i}", "props": "text-align: left;"} for i in text]
            )
        )
        return str(styler.to_html())

    def __repr__(self) -> str:
        return str(self.frame.to_string(na_rep="n/a"))


def _cell(value: Any) -> str:
    """A cell as pandas' plain HTML shows it, without Styler's six decimals."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:,.10g}"
    return str(value)


_NUMBER = re.compile(r"^(under )?[-+]?[$]?[\d,]*\.?\d+ ?(%|[KMG]?B|s)?$")


def _is_text(value: Any) -> bool:
    """Whether a cell reads as words (left-aligned) rather than a number or n/a."""
    if not isinstance(value, str):
        return False
    return not (value in ("", "-", "n/a", "unlimited") or _NUMBER.match(value.strip()))


class Chart:
    """A matplotlib figure Jupyter shows as a PNG, without pyplot's global state."""

    def __init__(self, figure: Figure) -> None:
        self.figure = figure

    def png(self) -> bytes:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()

    def _repr_png_(self) -> bytes:
        return self.png()

    def __repr__(self) -> str:
        return "<chart>"


def figure(width: float = 10.0, height: float = 4.2) -> Figure:
    """A figure of the report's size (1000 px wide: the HTML page's width, text at the
    page's size); matplotlib is imported only when a chart is drawn."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: Any, digits: int = 0) -> str:
    """Thousands separated; an infinite bound reads "unlimited"."""
    if _missing(value):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "unlimited"
    return f"{value:,.{digits}f}"


def usd(value: Any) -> str:
    """Dollars; under a cent with four decimals, so a per-generation cost is not $0.00."""
    if _missing(value):
        return "n/a"
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:,.4f}"


def size(value: Any) -> str:
    """Bytes in the largest binary unit that fits (``1.5 MB``)."""
    if _missing(value):
        return "n/a"
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if value >= scale:
            return f"{value / scale:,.1f}".removesuffix(".0") + f" {unit}"
    return f"{value:,.0f} B"
