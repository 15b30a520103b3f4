"""nbval runs every notebook here against the offline stack, started once for the run.

nbval starts each notebook's kernel when it sets up the file, before any fixture, so the
stack is started just before the first notebook cell runs (after the tests in tests/,
which run first and must not see these variables), and its variables (what `tripkit dev`
prints) are exported for the kernels to inherit. Headless mode and a short poll interval
keep CI quick.
"""

from __future__ import annotations

import os

import pytest

from tripkit.devstack.stack import LocalStack, StackConfig

_state: dict[str, object] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if "stack" in _state or item.path.suffix != ".ipynb":
        return
    config = StackConfig(chunk_delay=0.0, backoff_ms=[50, 100, 200, 400], unreachable_budget=30)
    stack = LocalStack(config).start()
    _state["stack"] = stack
    _state["environ"] = dict(os.environ)
    os.environ.update(stack.env)
    os.environ["TRIPKIT_HEADLESS"] = "1"
    os.environ["TRIPKIT_POLL_INTERVAL"] = "0.2"
    # the usage report's harvest goes to a scratch file, not into the checkout
    os.environ["TRIPKIT_HISTORY_CSV"] = str(stack.workdir / "runs.csv")


def pytest_unconfigure(config: pytest.Config) -> None:
    stack = _state.pop("stack", None)
    if isinstance(stack, LocalStack):
        stack.stop()
        saved = _state.pop("environ")
        assert isinstance(saved, dict)
        os.environ.clear()
        os.environ.update(saved)
