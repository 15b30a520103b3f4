"""A client for tripkit's HTTP API: request bundles, follow the session to its end,
cancel it.

Two ways to follow: :meth:`ApiClient.watch` polls, as the original app's browser code
does (every 2 s until completed: one Redis command per poll); :meth:`ApiClient.follow`
takes the session's events by push (``GET /api/session/{id}/events``), reconnecting
and resuming from the last event id when the connection drops. The demo, the notebooks
and the tests use it against any deployment of :mod:`tripkit.api`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

from tripkit import events
from tripkit.errors import SessionNotFound, TripkitError
from tripkit.events import SessionEvent
from tripkit.models import Preferences, Session

#: Answers after which :meth:`ApiClient.follow` connects again instead of giving up.
_PASSING = frozenset({502, 503, 504})


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
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        self.polls = 0
        #: Connections :meth:`follow` opened again after one dropped or failed.
        self.reconnects = 0

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

    async def request_bundles(
        self, preferences: Preferences, *, idempotency_key: str | None = None
    ) -> str:
        """``POST /api/generate-bundles``; returns the session id. With an
        ``idempotency_key`` (e.g. ``str(uuid.uuid4())`` made once per click), sending the
        request again, after a timeout say, returns the same session and starts no
        second run."""
        body = await self._call(
            "POST",
            "/api/generate-bundles",
            json=preferences.model_dump(mode="json", by_alias=True, exclude_none=True),
            headers={"Idempotency-Key": idempotency_key} if idempotency_key else None,
        )
        return str(body["sessionId"])

    async def cancel(self, session_id: str) -> Session:
        """``POST /api/session/{id}/cancel``: the session, ``cancelled`` (also when it
        was already). Raises :class:`SessionNotFound` for an unknown or expired id and
        :class:`ApiError` (status 409) when the generation had finished already."""
        return Session.model_validate(await self._call("POST", f"/api/session/{session_id}/cancel"))

    async def session(self, session_id: str) -> Session:
        """``GET /api/session/{id}``: one poll."""
        self.polls += 1
        return Session.model_validate(await self._call("GET", f"/api/session/{session_id}"))

    async def watch(
        self, session_id: str, *, interval: float = 2.0, timeout: float | None = None
    ) -> AsyncGenerator[Session, None]:
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

    async def follow(
        self,
        session_id: str,
        last_event_id: int | None = None,
        *,
        retries: int = 8,
        backoff: tuple[float, float] = (0.2, 5.0),
        read_timeout: float = 60.0,
    ) -> AsyncGenerator[SessionEvent, None]:
        """The session's events by push, after ``last_event_id`` (all without one),
        until the final event. A dropped connection, a read silent for ``read_timeout``
        seconds (the server sends keep-alives far more often) or a 502/503/504 is retried
        with exponential backoff from ``backoff[0]`` to ``backoff[1]`` seconds,
        resuming after the last event received; more than ``retries`` failures in a row
        raise :class:`TripkitError`. A 204 (the final event was already received) ends
        the iteration; 404 raises :class:`SessionNotFound`, other errors
        :class:`ApiError`."""
        path = f"/api/session/{session_id}/events"
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        last = last_event_id
        failures = 0
        delay = backoff[0]
        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            progressed = False
            try:
                async with aconnect_sse(
                    self._http, "GET", path, headers=headers, timeout=timeout
                ) as source:
                    response = source.response
                    if response.status_code == 204:
                        return
                    if response.status_code >= 400 and response.status_code not in _PASSING:
                        await response.aread()
                        await self._json(response)  # raises the API's error
                    if response.status_code == 200:
                        async for sse in source.aiter_sse():
                            # httpx-sse hands on a keep-alive comment as an event without
                            # data; the SSE spec dispatches no event with empty data.
                            if not sse.data or not sse.id:
                                continue
                            event = _event(sse.id, sse.event, sse.data)
                            last, progressed = event.id, True
                            yield event
                            if event.is_final:
                                return
            except (httpx.TransportError, SSEError):
                pass  # dropped, timed out, or not an event stream: connect again
            if progressed:
                failures, delay = 0, backoff[0]
            else:
                failures += 1
                if failures > retries:
                    raise TripkitError(
                        f"Lost the event stream of session {session_id} at {self.base_url} "
                        f"{failures} times in a row.",
                        remedy="Is the app running and Redis reachable (`tripkit check`)?",
                    )
            self.reconnects += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, backoff[1])


def _event(event_id: str, name: str, data: str) -> SessionEvent:
    try:
        return events.parse(int(event_id), name, json.loads(data))
    except ValueError as exc:
        raise TripkitError(
            f"The API sent an event this client cannot read ({exc}).",
            remedy="Are the app and this client the same tripkit version?",
        ) from None
