"""Where the browser tests leave their screenshots, and what they report at the end."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
#: Lines printed in the pytest summary (the screenshots folder, measured times).
REPORT: list[str] = []


def shot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Save what the tab shows now as ``test-artifacts/browser/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def run_all(page: Any) -> None:
    """JupyterLab's Run -> Run All Cells, through the menu as a person does it, once the
    status bar says the kernel is idle (cells run before that are silently not run)."""
    idle = page.locator(".jp-StatusBar-Widget").get_by_text(re.compile(r"ipykernel\) \| Idle"))
    idle.first.wait_for(timeout=90_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
