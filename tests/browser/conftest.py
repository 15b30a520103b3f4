"""The notebooks as people use them: JupyterLab in a real (headless) Chromium.

Playwright for Python drives Debian's Chromium (``/usr/bin/chromium``; Playwright cannot
download its own browsers here). JupyterLab is started the way ``make lab`` starts it
(``python -m tripkit.jupyter.lab``, cwd the project root, the kernel's cwd ``notebooks/``).
Every test saves screenshots into ``test-artifacts/browser/`` (a failure's last page as
``FAILED-<test>.png``); the folder and the click-to-first-summary time are printed at the
end of the run. Without Chromium the tests fail under CI (``CI`` set, as ``.ci/run``
does) and are skipped, saying why, elsewhere.

Every fixture here is package-scoped: Playwright's sync API keeps an event loop running
in the test thread while it is open, so it must be closed before the asyncio tests of
the other packages run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import clean_env

from browser.screens import ARTIFACTS, REPORT, ROOT
from tripkit.devstack.serving import free_port
from tripkit.devstack.stack import LocalStack, StackConfig

CHROMIUM = Path(os.environ.get("TRIPKIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAB_START_TIMEOUT = 120.0  # JupyterLab imports a lot; on a loaded 2-core CI host it is slow


@dataclass
class Lab:
    """A JupyterLab started like ``make lab``: ``url(path)`` opens a notebook in it."""

    base: str
    token: str
    root: Path
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, notebook: str) -> str:
        return f"{self.base}/lab/tree/{notebook}?token={self.token}&reset"


def _launch_lab(name: str, root: Path, home: Path, *, environment: str, env: dict[str, str]) -> Lab:
    home.mkdir(parents=True, exist_ok=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), secrets.token_urlsafe(16)
    # A fresh Jupyter config and workspace, so nothing of a developer's own setup leaks in.
    jupyter_dirs = {
        "JUPYTER_CONFIG_DIR": home / "config",
        "JUPYTER_DATA_DIR": home / "data",
        "JUPYTER_RUNTIME_DIR": home / "runtime",
        "JUPYTERLAB_SETTINGS_DIR": home / "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": home / "lab-workspaces",
        "IPYTHONDIR": home / "ipython",
    }
    variables = {name: str(path) for name, path in jupyter_dirs.items()} | env
    log = ARTIFACTS / f"{name}.log"  # kept: what JupyterLab and the kernels said
    command = [sys.executable, "-m", "tripkit.jupyter.lab", "--port", str(port)]
    command += ["--token", token, "--environment", environment]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=clean_env(variables),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Lab(f"http://127.0.0.1:{port}", token, root, process, log)


def _wait_ready(lab: Lab) -> None:
    process, log, token = lab.process, lab.log, lab.token
    deadline = time.monotonic() + LAB_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"make lab exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{lab.base}/api/status?token={token}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    _stop_lab(lab)
    raise RuntimeError(
        f"JupyterLab did not answer in {LAB_START_TIMEOUT:.0f} s:\n{log.read_text()}"
    )


def _stop_lab(lab: Lab) -> None:
    """SIGTERM, as Ctrl-C would: make lab stops JupyterLab (and its kernels) itself."""
    if lab.process.poll() is None:
        lab.process.terminate()
        try:
            lab.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(lab.process.pid, signal.SIGKILL)
            lab.process.wait()


@pytest.fixture(scope="package")
def browser_stack() -> Iterator[LocalStack]:
    """The offline stack, streaming slowly enough that a generation takes a few seconds
    (summaries land one by one, as with a real model)."""
    config = StackConfig(chunk_delay=0.01, backoff_ms=[50, 100, 200, 400], unreachable_budget=30)
    with LocalStack(config) as running:
        yield running


@pytest.fixture(scope="package")
def labs(
    browser_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Lab]]:
    """Two ``make lab`` runs, started together (JupyterLab is slow to start):

    - ``local``: in the checkout with the stack's lines exported, as after ``tripkit dev``
      in another shell; the notebooks poll every 0.5 s;
    - ``real``: in a copy of the project layout whose ``.env.local`` holds a wrong Upstash
      token (for the stack's gateway), nothing in the environment: the notebooks must find
      that file from ``notebooks/`` and report what is wrong with it.
    """
    project = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    shutil.copytree(
        ROOT / "notebooks",
        project / "notebooks",
        ignore=shutil.ignore_patterns("*.py", "*.cfg", ".ipynb_checkpoints"),
    )
    (project / ".env.local").write_text(
        f"UPSTASH_REDIS_REST_URL={browser_stack.rest_url}\n"
        f"UPSTASH_REDIS_REST_TOKEN=wrong-{secrets.token_hex(8)}\n"
    )
    env = dict(browser_stack.env) | {"TRIPKIT_POLL_INTERVAL": "0.5"}
    started = [
        _launch_lab(
            "lab-local", ROOT, tmp_path_factory.mktemp("lab"), environment="local", env=env
        ),
        _launch_lab("lab-real", project, project / ".lab", environment="auto", env={}),
    ]
    try:
        for lab in started:
            _wait_ready(lab)
        yield started
    finally:
        for lab in started:
            _stop_lab(lab)


@pytest.fixture(scope="package")
def local_lab(labs: list[Lab]) -> Lab:
    return labs[0]


@pytest.fixture(scope="package")
def real_lab(labs: list[Lab]) -> Lab:
    return labs[1]


@pytest.fixture(scope="package")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Chromium with a fresh profile; a clear failure under CI when it is missing."""
    if not CHROMIUM.exists():
        message = (
            f"Chromium is not at {CHROMIUM}: install it (`apt-get install -y chromium`; "
            ".ci/run does) or set TRIPKIT_CHROMIUM to its path."
        )
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    REPORT.append(f"browser screenshots: {ARTIFACTS}")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=False,  # --headless=new is in the arguments, as Debian's build wants it
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        context.set_default_timeout(30_000)
        yield context
        context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(browser_context: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A new tab; its screenshot goes to the artifacts folder when the test fails."""
    tab = browser_context.new_page()
    yield tab
    if request.node.stash.get(_FAILED, False):
        path = ARTIFACTS / f"FAILED-{request.node.name}.png"
        tab.screenshot(path=str(path), full_page=True)
        REPORT.append(f"failure screenshot: {path}")
    tab.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("browser tests")
        for line in REPORT:
            terminalreporter.write_line(line)
