"""The HTTP API, as the original app exposes it, plus the Inngest serve endpoint.

- ``POST /api/generate-bundles`` -> 202 ``{sessionId, status, pollUrl}``; with an
  ``Idempotency-Key`` header, a repeat gets the first request's session
- ``GET /api/session/{id}`` -> 200 the session (with an ``ETag``: a poll that sends it back
  as ``If-None-Match`` gets 304 while nothing changed), 404 ``{"error": "Session not found"}``
- ``GET /api/session/{id}/events`` -> the session's events as server-sent events: the
  history the client has not seen (``Last-Event-ID``), then live ones, until the final
  one; 204 to a client that already has it (see :mod:`tripkit.push`)
- ``POST /api/session/{id}/cancel`` -> 202 the session, now ``cancelled``
- ``/api/inngest`` -> the Inngest SDK's serve handler (signed in production)
- ``GET /healthz`` -> Redis and Inngest reachability

``uvicorn tripkit.api:app`` serves it, configured from the environment / ``.env.local``.
``TRIPKIT_ROLE`` picks what one process serves: ``all`` of it (the default, for small
setups), or one side of a split deployment: ``api`` (the two public routes) or
``worker`` (``/api/inngest``, where the steps run). Split, a burst of steps can never
starve the routes that must answer within a second. Both sides serve ``/healthz``.
Every error is JSON with an ``error`` and, where one helps, a ``hint``; never a traceback.
The OpenAPI schema (``/openapi.json``) declares every status each route answers, with
the error body's model; ``/api/inngest`` is left out of it: it speaks Inngest's protocol
to Inngest, not to API clients.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import inngest
import inngest.fast_api
import openai
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from tripkit import __version__, events, keys, push, signing
from tripkit.config import Settings, load_settings
from tripkit.constants import SERVE_PATH
from tripkit.errors import (
    ConfigError,
    IdempotencyKeyReused,
    InvalidSessionId,
    RedisBusy,
    SessionNotFound,
    StoreError,
    TripkitError,
)
from tripkit.gate import Gate
from tripkit.llm import ModelAuthError, ModelClient
from tripkit.models import Preferences, Session, Status, WireModel
from tripkit.store import SessionStore
from tripkit.trigger import (
    EventSender,
    TriggerError,
    cancel_bundles,
    inngest_client,
    request_bundles,
)
from tripkit.worker import Worker, create_functions

log = logging.getLogger("tripkit.api")

#: Preferences are small; anything bigger is a mistake or an attack.
MAX_API_BODY = 64 * 1024
#: Inngest sends the run's step outputs with each call (Inngest caps a run's state at 32 MiB).
MAX_INNGEST_BODY = 32 * 1024 * 1024
#: Health probes of a local Inngest in flight at once.
PROBES = 4
#: Seconds a push client may take to accept one event before it is dropped.
PUSH_SEND_TIMEOUT = 30.0
#: Line ends of the event stream (any of CRLF, CR, LF is valid SSE).
PUSH_SEP = "\n"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Accepted(WireModel):
    """The answer to a generation request: where to poll."""

    session_id: str
    status: str
    poll_url: str


class Problem(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error the API answers: what went wrong and, where one helps, what to do."""

    error: str
    hint: str | None = None
    problems: list[Problem] | None = None  # 422: one per invalid field
    limit: int | None = None  # 413: the largest body accepted, in bytes
    status: str | None = None  # 409: the status the session had finished with


Responses = dict[int | str, dict[str, Any]]


def _errors(*statuses: int, also: Responses | None = None) -> Responses:
    """OpenAPI ``responses`` for these error statuses, each with the error body's model,
    plus ``also`` (the other answers a route gives beside its success)."""
    described = {
        400: "Malformed request: a session id tripkit never issues, a body that is not JSON, "
        "or a malformed Idempotency-Key",
        404: "No such session (unknown, or expired after its TTL)",
        409: "The session had finished already (completed or failed): `status` says how",
        413: "Request body too large",
        422: "Invalid fields, each one listed in `problems`; or an Idempotency-Key reused "
        "with other preferences",
        500: "Internal error (logged by the server)",
        503: "Redis or Inngest unavailable; retry after `Retry-After` seconds when given",
    }
    errors: Responses = {s: {"model": ErrorBody, "description": described[s]} for s in statuses}
    return (also or {}) | errors


class BadIdempotencyKey(TripkitError):
    remedy = (
        "Send at most one Idempotency-Key: 1 to 255 printable ASCII characters, "
        "e.g. a fresh UUID per generation."
    )


#: The IETF draft (httpapi-idempotency-key-header) leaves the key's format to the
#: server; a UUID fits, and a cap keeps the header from being a place to store data.
MAX_IDEMPOTENCY_KEY = 255


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY or not value.isascii() or not value.isprintable():
        raise BadIdempotencyKey("Malformed Idempotency-Key header.")
    return value


def error_body(error: str, hint: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error, **extra}
    if hint:
        body["hint"] = hint
    return body


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    response = JSONResponse(body, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class Guard:
    """ASGI middleware: body size limits, and the signature replay window on /api/inngest.

    inngest 0.5.x accepts a correctly signed request of any age; Inngest's SDK spec says a
    5-minute window SHOULD be enforced, so in production we verify here first.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.signing_key = settings.inngest_signing_key
        self.fallback_key = settings.inngest_signing_key_fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = MAX_INNGEST_BODY if path == SERVE_PATH else MAX_API_BODY
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_json(send, 413, error_body("Request body too large", limit=limit))
            return
        bodiless = declared in (None, b"0") and b"transfer-encoding" not in headers
        if bodiless and scope["method"] in ("GET", "HEAD"):  # a poll goes straight on
            await self.app(scope, receive, send)
            return
        chunks = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks += message.get("body", b"")
            more = message.get("more_body", False)
            if len(chunks) > limit:
                await _send_json(send, 413, error_body("Request body too large", limit=limit))
                return
        body = bytes(chunks)
        if path == SERVE_PATH and scope["method"] == "POST" and self.signing_key is not None:
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            try:
                signing.verify(
                    headers.get("x-inngest-signature"),
                    body,
                    self.signing_key.get_secret_value(),
                    fallback=(self.fallback_key.get_secret_value() if self.fallback_key else None),
                )
            except signing.SignatureError as exc:
                await _send_json(send, 401, error_body("Invalid signature", exc.message))
                return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class PushResponse(EventSourceResponse):
    """sse-starlette's response (keep-alive comments, disconnect detection, the end of
    the stream on server shutdown) that releases the client's share of the push hub
    however it ends, even when the client left before the stream started."""

    def __init__(self, stream: push.SessionStream, *, keepalive: float) -> None:
        super().__init__(
            _frames(stream), ping=keepalive, send_timeout=PUSH_SEND_TIMEOUT, sep=PUSH_SEP
        )
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.close()


async def _frames(stream: push.SessionStream) -> AsyncIterator[ServerSentEvent]:
    async for event in stream:
        yield ServerSentEvent(
            data=event.data_json(), event=event.event, id=str(event.id), sep=PUSH_SEP
        )


#: What the push route answers besides its errors.
PUSH_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events: `status`, `summary`, then one final event "
        "named after the final status (`completed` with the bundles, `failed`, ...). "
        "Each has an `id:` to send back as `Last-Event-ID`; keep-alive comments between.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    204: {"description": "The client already has the final event: stop reconnecting"},
}


def _field(loc: tuple[Any, ...], kind: str = "") -> str:
    if kind == "json_invalid":  # its loc ends with a character position, not a field
        return "body"
    parts = [str(p) for p in loc if p not in ("body", "path", "query")]
    return ".".join(parts) or "body"


class ModelProvider:
    """The model client, built on first use: a missing key fails the run, not the app's
    start (and the run's ``on_failure`` says "check OPENAI_API_KEY")."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: ModelClient | None = None

    def __call__(self) -> ModelClient:
        if self._client is None:
            if self.settings.openai_api_key is None:
                raise ModelAuthError("OPENAI_API_KEY is not set.")
            client = openai.AsyncOpenAI(
                api_key=self.settings.openai_api_key.get_secret_value(),
                base_url=self.settings.openai_base_url,
                max_retries=0,  # Inngest retries the step, with backoff
                timeout=120.0,
            )
            self._client = ModelClient(client, self.settings.openai_model)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.client.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app, wired from ``settings`` (default: the environment and ``.env.local``);
    ``settings.role`` decides which routes it serves."""
    settings = settings or load_settings()
    settings.redis_transport_name  # noqa: B018 - fail at start if no Redis is configured
    role = settings.role
    store = SessionStore.from_settings(settings)
    client = inngest_client(settings)
    model = ModelProvider(settings) if role != "api" else None
    sender = EventSender(client) if role != "worker" else None
    channel = keys.events_channel(settings.key_prefix)
    hub = push.PushHub(
        lambda: store.transport.subscribe(channel), ready_timeout=settings.redis_timeout
    )

    # One client for the health probe of a local Inngest (a client per probe costs ~40 ms
    # of CPU to build), behind a gate like every pool here.
    probe = httpx.AsyncClient(timeout=2.0, limits=httpx.Limits(max_connections=PROBES))
    probes = Gate(PROBES, 2.0, busy=TripkitError)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # What startup built (modules, schemas, SDK clients: some 140,000
        # objects) lives as long as the process: out of the collector's sight, full
        # collections stop re-scanning it, which took a third of a poll's CPU.
        gc.collect()
        gc.freeze()
        yield
        await hub.aclose()
        if sender is not None:
            await sender.aclose()
        await store.aclose()
        await probes.drain(2.0)
        await probe.aclose()
        if model is not None:
            await model.aclose()

    # FastAPI's native OpenTelemetry hooks look up the global providers on every request
    # (a tenth of a poll's CPU); tripkit configures none, so it turns them off.
    off: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title="tripkit", version=__version__, lifespan=lifespan, telemetry=off)
    app.state.settings = settings
    app.state.store = store
    app.state.inngest = client
    app.state.push_hub = hub
    _error_handlers(app)

    if role != "worker":

        @app.post(
            "/api/generate-bundles",
            status_code=202,
            responses={
                202: {
                    "model": Accepted,
                    "description": "Queued (or, for a repeated "
                    "Idempotency-Key, the first request's session)",
                },
                **_errors(400, 413, 422, 500, 503),
            },
        )
        async def generate_bundles(
            preferences: Preferences,
            idempotency_key: str | None = Header(
                default=None,
                description="Any unique text (a UUID) per generation: a repeat of the "
                "request with the same key and preferences, within the session TTL, gets "
                "the first request's session (with Idempotent-Replayed: true) and starts "
                "no second run; other preferences with the same key are a 422.",
            ),
        ) -> JSONResponse:
            session, created = await request_bundles(
                preferences,
                store=store,
                client=client,
                sender=sender,
                idempotency_key=_idempotency_key(idempotency_key),
            )
            accepted = Accepted(
                session_id=session.session_id,
                status=session.status.value,
                poll_url=f"/api/session/{session.session_id}",
            )
            return JSONResponse(
                accepted.model_dump(mode="json", by_alias=True),
                status_code=202,
                headers=None if created else {"Idempotent-Replayed": "true"},
            )

        async def poll(session_id: str, if_none_match: str | None) -> Response:
            # The stored document is the wire form: no decoding, validating, re-encoding.
            raw = await store.get_raw(session_id)
            etag = f'"{hashlib.blake2b(raw, digest_size=12).hexdigest()}"'
            headers = {"ETag": etag, "Cache-Control": "no-cache"}
            if if_none_match is not None and _matches(if_none_match, etag):
                return Response(status_code=304, headers=headers)
            return Response(raw, media_type="application/json", headers=headers)

        @app.get(
            "/api/session/{session_id}",
            response_model=Session,
            responses=_errors(
                400,
                404,
                500,
                503,
                also={304: {"description": "Not modified since the `ETag` sent"}},
            ),
        )
        async def get_session(
            session_id: str, if_none_match: str | None = Header(default=None)
        ) -> Response:
            """The session as last written. Polls are served by the plain route placed
            in front of this one (FastAPI's parameter handling costs a third of a poll);
            this one documents it in the schema."""
            return await poll(session_id, if_none_match)

        async def plain_poll(request: Request) -> Response:
            return await poll(
                request.path_params["session_id"], request.headers.get("if-none-match")
            )

        app.router.routes.insert(0, Route("/api/session/{session_id}", plain_poll, methods=["GET"]))

        @app.get(
            "/api/session/{session_id}/events",
            # No media type of its own: errors are declared as JSON, the 200 as events.
            response_class=Response,
            responses=_errors(400, 404, 500, 503, also=PUSH_ANSWERS)
            | {400: {"model": ErrorBody, "description": "Malformed session id or Last-Event-ID"}},
        )
        async def session_events(
            session_id: str,
            last_event_id: Annotated[str | None, Header()] = None,
            last_event_id_query: Annotated[str | None, Query(alias="lastEventId")] = None,
        ) -> Response:
            """Follow a session by push. The ``Last-Event-ID`` header (what EventSource
            sends when it reconnects) wins over the ``lastEventId`` query parameter (for
            clients that cannot set headers; it stays in the URL across reconnects)."""
            keys.validate_session_id(session_id)
            since = events.parse_last_event_id(last_event_id, last_event_id_query)
            stream = await push.open_stream(hub, session_id, lambda: store.get(session_id), since)
            if stream is None:
                return Response(status_code=204)
            return PushResponse(stream, keepalive=settings.push_keepalive)

        @app.post(
            "/api/session/{session_id}/cancel",
            status_code=202,
            responses={
                200: {"model": Session, "description": "It was cancelled already"},
                202: {
                    "model": Session,
                    "description": "Cancelled: the run stops at its "
                    "next step boundary and writes nothing more",
                },
                **_errors(400, 404, 409, 413, 500, 503),
            },
        )
        async def cancel_session(session_id: str) -> JSONResponse:
            session, cancelled = await cancel_bundles(
                session_id, store=store, client=client, sender=sender
            )
            body = session.model_dump(mode="json", by_alias=True)
            if cancelled or session.status is Status.CANCELLED:
                return JSONResponse(body, status_code=202 if cancelled else 200)
            return JSONResponse(
                error_body(
                    f"Session already {session.status.value}",
                    "A finished generation cannot be cancelled.",
                    status=session.status.value,
                ),
                status_code=409,
            )

    @app.get(
        "/healthz",
        responses=_errors(
            500,
            also={
                200: {"description": "Every part reachable"},
                503: {"description": "Redis or Inngest unreachable; the body says which"},
            },
        ),
    )
    async def healthz() -> JSONResponse:
        report = {
            "redis": await _redis_health(store),
            "inngest": await _inngest_health(settings, probe, probes),
        }
        healthy = all(part["ok"] is not False for part in report.values())
        body = {"status": "ok" if healthy else "degraded", "role": role, **report}
        if role != "worker":
            body["push"] = {
                "listeners": hub.listener_count,
                "subscribed": hub.subscribed,
                "subscriptions": hub.subscriptions,
            }
        return JSONResponse(body, status_code=200 if healthy else 503)

    if model is not None:
        worker = Worker(store=store, model=model)
        functions = create_functions(
            client,
            worker,
            concurrency=settings.generation_concurrency,
            deadline=settings.run_deadline,
        )
        inngest.fast_api.serve(app, client, functions, serve_path=SERVE_PATH)
        for route in app.routes:
            if isinstance(route, APIRoute) and route.path == SERVE_PATH:
                route.include_in_schema = False
    app.add_middleware(Guard, settings=settings)
    return app


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weakly, as RFC 9110 says for
    GET), or is ``*``."""
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return etag in tags or "*" in tags


def _error_handlers(app: FastAPI) -> None:
    """Every error as JSON with what to do about it; never a traceback."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": _field(e["loc"], e["type"]), "message": e["msg"]} for e in exc.errors()
        ]
        return JSONResponse(
            error_body(
                "Invalid request", "Fix the fields listed in 'problems'.", problems=problems
            ),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Routing errors (404 no such path, 405 wrong method) get the same JSON shape.
        return JSONResponse(
            error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(InvalidSessionId)
    async def bad_id(_: Request, exc: InvalidSessionId) -> JSONResponse:
        return JSONResponse(error_body("Malformed session id", exc.remedy), status_code=400)

    @app.exception_handler(events.InvalidEventId)
    async def bad_event_id(_: Request, exc: events.InvalidEventId) -> JSONResponse:
        return JSONResponse(
            error_body("Invalid Last-Event-ID", f"{exc.message} {exc.remedy}"), status_code=400
        )

    @app.exception_handler(BadIdempotencyKey)
    async def bad_key(_: Request, exc: BadIdempotencyKey) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.remedy), status_code=400)

    @app.exception_handler(IdempotencyKeyReused)
    async def key_reused(_: Request, exc: IdempotencyKeyReused) -> JSONResponse:
        return JSONResponse(
            error_body("Idempotency-Key reused with other preferences", str(exc)),
            status_code=422,
        )

    @app.exception_handler(SessionNotFound)
    async def not_found(_: Request, exc: SessionNotFound) -> JSONResponse:
        return JSONResponse(error_body("Session not found", exc.remedy), status_code=404)

    @app.exception_handler(StoreError)
    async def store_down(_: Request, exc: StoreError) -> JSONResponse:
        # The detail (host, port) is for the operator's log, not for any caller.
        log.warning("redis error: %s", exc.message)
        # Busy is momentary (every connection in use): tell clients when to come back.
        headers = {"Retry-After": "1"} if isinstance(exc, RedisBusy) else None
        return JSONResponse(
            error_body("Session store unavailable", exc.remedy), status_code=503, headers=headers
        )

    @app.exception_handler(TriggerError)
    async def trigger_failed(_: Request, exc: TriggerError) -> JSONResponse:
        return JSONResponse(error_body("Could not start the generation", str(exc)), status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(error_body("Internal error"), status_code=500)


async def _redis_health(store: SessionStore) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await store.transport.execute("PING", retry_safe=True)
    except TripkitError as exc:
        log.warning("health: redis error: %s", exc.message)
        return {"ok": False, "transport": store.transport.name, "error": type(exc).__name__}
    ms = round((time.perf_counter() - started) * 1000, 1)
    return {"ok": True, "transport": store.transport.name, "latencyMs": ms}


async def _inngest_health(
    settings: Settings, probe: httpx.AsyncClient, probes: Gate
) -> dict[str, Any]:
    if settings.inngest_base_url is None:
        return {"ok": None, "detail": "Inngest Cloud; not probed (see `tripkit check`)"}
    url = f"{settings.inngest_base_url}/health"
    try:
        response = await probes.run(lambda: probe.get(url))
    except (httpx.HTTPError, TripkitError) as exc:
        return {"ok": False, "url": settings.inngest_base_url, "error": type(exc).__name__}
    return {"ok": response.status_code == 200, "url": settings.inngest_base_url}


def __getattr__(name: str) -> Any:
    """``tripkit.api:app`` is built on first access, so importing the module is free and a
    configuration error ends the server with a clear message instead of a traceback."""
    if name != "app":
        raise AttributeError(name)
    try:
        application = create_app()
    except ConfigError as exc:
        print(f"tripkit: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    globals()["app"] = application
    return application
