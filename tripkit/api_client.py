"""A client for tripkit's HTTP API: request bundles, then poll the session until it ends.

This is what the original app's browser code does (poll every 2 s until completed); the
demo, the notebooks and the tests use it against any deployment of :mod:`tripkit.api`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tripkit.errors import SessionNotFound, TripkitError
from tripkit.models import Preferences, Session


class ApiError(TripkitError):
    """The API answered with an error; ``status`` is the HTTP status."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        error = body.get("error") if isinstance(body, dict) else None
        hint = body.get("hint") if isinstance(body, dict) else None
        super().__init__(f"The API answered {status}: {error or body}.", remedy=hint or "")


class ApiClient:
    """Async client for one tripkit API base URL (e.g. ``http://127.0.0.1:8000``)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        self.polls = 0

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _json(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = response.text[:200]
        if response.status_code == 404 and isinstance(body, dict):
            raise SessionNotFound(str(body.get("error", "Session not found")) + ".")
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise TripkitError(
                f"Cannot reach the tripkit API at {self.base_url}: {type(exc).__name__}.",
                remedy="Is the app running (`tripkit dev`, or uvicorn tripkit.api:app)?",
            ) from None
        return await self._json(response)

    async def request_bundles(self, preferences: Preferences) -> str:
        """``POST /api/generate-bundles``; returns the session id."""
        body = await self._call(
            "POST",
            "/api/generate-bundles",
            json=preferences.model_dump(mode="json", by_alias=True, exclude_none=True),
        )
        return str(body["sessionId"])

    async def session(self, session_id: str) -> Session:
        """``GET /api/session/{id}``: one poll."""
        self.polls += 1
        return Session.model_validate(await self._call("GET", f"/api/session/{session_id}"))

    async def watch(
        self, session_id: str, *, interval: float = 2.0, timeout: float | None = None
    ) -> AsyncIterator[Session]:
        """Poll every ``interval`` seconds, yielding each state, until a final status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            session = await self.session(session_id)
            yield session
            if session.is_final:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TripkitError(
                    f"Session {session_id} is still {session.status.value} after {timeout:.0f} s.",
                    remedy="Polling never completes? Check that the worker is running "
                    "(Inngest dashboard, or `tripkit check`).",
                )
            await asyncio.sleep(interval)
