"""What the service checks share: how long a call took, and an HTTP GET whose failure
is a ``FAIL`` result asking whether the app is running, not an exception."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tripkit.checks.core import Context
from tripkit.errors import TripkitError

#: The remedy when the app (or its worker) does not answer within the checks' timeout.
SLOW_APP = "The app did not answer in time: is it deployed and running?"
#: The remedy when the app cannot be reached at all.
APP_DOWN = (
    "Is the app deployed (Step 3) and running? Locally: is `tripkit dev` running? "
    "Check the Vercel deployment logs."
)


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started``, a :func:`time.perf_counter` reading."""
    return (time.perf_counter() - started) * 1000


async def http_get(
    ctx: Context,
    url: str,
    headers: dict[str, str] | None = None,
    *,
    unreachable: str = APP_DOWN,
) -> tuple[httpx.Response, float]:
    """The response and how long it took, in ms; an unreachable URL is a FAIL whose
    remedy is ``unreachable`` (default: is the app running?)."""
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(timeout=ctx.timeout, follow_redirects=True) as http:
            return await http.get(url, headers=headers), elapsed_ms(started)
    except httpx.HTTPError as exc:
        raise _Unreachable(url, exc, ctx.timeout, unreachable) from None


class _Unreachable(TripkitError):
    def __init__(self, url: str, exc: httpx.HTTPError, timeout: float, remedy: str) -> None:
        what = (
            f"{url} did not answer within {timeout:g} s"
            if isinstance(exc, httpx.TimeoutException)
            else f"Cannot reach {url}: {type(exc).__name__}"
        )
        super().__init__(what + ".", remedy=remedy)


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The response's body if it is a JSON object, else None."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
