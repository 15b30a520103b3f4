"""The executor's HTTP surface: the Inngest Dev Server's routes, plus two of our own.

It takes events on ``/e/{key}``, takes the SDK's sync on ``/fn/register`` and hands both
to the :class:`~tripkit.devstack.executor.engine.Engine`, which drives the app's serve
handler. With a signing key it signs calls and checks answers and registrations, so the
production path is exercised end to end. Routes (JSON everywhere)::

    GET    /health                      {"status": 200, "message": "OK"}
    POST   /e/{event_key}               {"ids": [...], "status": 200}; a bad event:
                                        400 {"ids": [kept...], "status": 400, "error"}
    POST   /fn/register                 {"ok": true, "modified": bool}
    POST   /_control/sync  {"url": u}   {"ok": true, "app_id", "url", "functions", "modified"}
    GET    /v1/events                   {"data": [event...], "metadata": {...}}
    GET    /v1/events/{id}/runs         {"data": [run...], "metadata": {...}}
    GET    /v1/runs/{run_id}            {"data": run, "metadata": {...}}
    DELETE /v1/runs/{run_id}            cancel a run; {"data": run, ...}
    GET    /v1/functions                {"data": [function...], "metadata": {...}}
    GET    /_control/queues             {"data": {queue: {limit, active, waiting, peak}}}
    GET    /_control/cron               {"data": {"<function id> <cron>": next due (ISO)}}

:func:`run` serves it and prints ``INNGEST_BASE_URL=http://127.0.0.1:8288`` once it
accepts connections.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import urllib.parse
import uuid
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tripkit.devstack import serving
from tripkit.devstack.executor.config import MAX_EVENT_BYTES, ExecutorConfig
from tripkit.devstack.executor.engine import BadInput, Engine
from tripkit.devstack.executor.protocol import Header, QueryParam
from tripkit.devstack.executor.registry import Json, iso, now_utc
from tripkit.devstack.executor.schedule import Clock, utc_now

log = logging.getLogger("tripkit.devstack.executor")


def _envelope(data: Json, status: int = 200) -> JSONResponse:
    """The dev server's REST shape."""
    metadata = {"fetched_at": iso(now_utc()), "cached_until": None}
    return JSONResponse({"data": data, "metadata": metadata}, status_code=status)


def _error(message: str, status: int, **extra: Json) -> JSONResponse:
    return JSONResponse({"error": message, "status": status, **extra}, status_code=status)


async def _json_body(request: Request) -> Json:
    """The request's JSON; BadInput when too large or not JSON."""
    raw = await request.body()
    if len(raw) > MAX_EVENT_BYTES:
        raise BadInput(f"the body is larger than {MAX_EVENT_BYTES} bytes")
    try:
        return json.loads(raw)
    except ValueError:
        raise BadInput("the body is not valid JSON") from None


def create_app(config: ExecutorConfig, clock: Clock = utc_now) -> Starlette:
    """The executor as an ASGI app; ``app.state.engine`` holds its functions, events, runs.

    ``clock`` is what cron schedules are read against (tests pass a faster one).
    """
    engine = Engine(config, clock=clock)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": 200, "message": "OK"})

    async def send_events(request: Request) -> JSONResponse:
        key = request.path_params["event_key"]
        if config.event_key and not hmac.compare_digest(key, config.event_key):
            return _error("Event key not found", 401)
        try:
            events, problem = engine.parse_events(await _json_body(request))
        except BadInput as err:
            return _error(str(err), 400, ids=[])
        ids = engine.ingest(events, seed=request.headers.get(Header.EVENT_ID_SEED))
        if problem is not None:
            return _error(problem, 400, ids=ids)
        return JSONResponse({"ids": ids, "status": 200})

    async def register(request: Request) -> JSONResponse:
        if not engine.check_register_auth(request.headers.get(Header.AUTHORIZATION)):
            return _error(
                "the Authorization header does not match the executor's signing key: the app "
                "and the executor must share INNGEST_SIGNING_KEY",
                401,
            )
        try:
            answer = engine.register(
                await _json_body(request), request.query_params.get(QueryParam.SYNC_ID)
            )
        except BadInput as err:
            return _error(f"invalid sync body: {err}", 400)
        return JSONResponse(answer)

    async def control_sync(request: Request) -> JSONResponse:
        try:
            body = await _json_body(request)
        except BadInput as err:
            return JSONResponse({"ok": False, "error": str(err)}, status_code=400)
        url = body.get("url") if isinstance(body, dict) else None
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if (
            not isinstance(url, str)
            or parts is None
            or parts.scheme not in ("http", "https")
            or not parts.netloc
        ):
            return JSONResponse(
                {"ok": False, "error": 'expected {"url": "http://host:port/api/inngest"}'},
                status_code=400,
            )
        return await _sync(engine, url, str(request.base_url).rstrip("/"))

    async def list_events(request: Request) -> JSONResponse:
        try:
            limit = max(1, min(int(request.query_params.get("limit", "100")), 1000))
        except ValueError:
            return _error("limit must be an integer", 400)
        name = request.query_params.get("name")
        records = [
            e.to_json() for e in reversed(engine.events.values()) if name is None or e.name == name
        ]
        return _envelope(records[:limit])

    async def event_runs(request: Request) -> JSONResponse:
        event = engine.find_event(request.path_params["event_id"])
        if event is None:
            return _envelope([])
        return _envelope([engine.runs[r].to_json() for r in event.run_ids if r in engine.runs])

    async def get_run(request: Request) -> JSONResponse:
        found = engine.runs.get(request.path_params["run_id"])
        if found is None:
            return _error("run not found", 404)
        return _envelope(found.to_json())

    async def cancel_run(request: Request) -> JSONResponse:
        found = engine.cancel(request.path_params["run_id"])
        if found is None:
            return _error("run not found", 404)
        return _envelope(found.to_json())

    async def list_functions(request: Request) -> JSONResponse:
        return _envelope([fn.to_json() for fn in engine.functions.values()])

    async def list_queues(request: Request) -> JSONResponse:
        return _envelope({name: queue.to_json() for name, queue in engine.queues.items()})

    async def list_cron(request: Request) -> JSONResponse:
        return _envelope(engine.cron.upcoming())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await engine.aclose()

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/e/{event_key}", send_events, methods=["POST"]),
            Route("/fn/register", register, methods=["POST"]),
            Route("/_control/sync", control_sync, methods=["POST"]),
            Route("/v1/events", list_events, methods=["GET"]),
            Route("/v1/events/{event_id}/runs", event_runs, methods=["GET"]),
            Route("/v1/runs/{run_id}", get_run, methods=["GET"]),
            Route("/v1/runs/{run_id}", cancel_run, methods=["DELETE"]),
            Route("/v1/functions", list_functions, methods=["GET"]),
            Route("/_control/queues", list_queues, methods=["GET"]),
            Route("/_control/cron", list_cron, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.engine = engine
    return app


async def _sync(engine: Engine, url: str, own_url: str) -> JSONResponse:
    """PUT the app's serve URL (the SDK then POSTs /fn/register here) and check it worked.

    inngest 0.5.x answers that PUT with 200 even when registration failed, so the body
    decides; the deployId we pass comes back on /fn/register and proves the app
    registered with *this* executor.
    """
    sync_id = uuid.uuid4().hex
    parts = urllib.parse.urlsplit(url)
    query = [*urllib.parse.parse_qsl(parts.query), (QueryParam.SYNC_ID, sync_id)]
    put_url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    try:
        resp = await engine.caller.client.put(
            put_url, content=b"", headers=engine.caller.signed_headers(b""), timeout=30.0
        )
    except httpx.HTTPError as err:
        return JSONResponse(
            {"ok": False, "error": f"could not reach {url}: {type(err).__name__}: {err}"},
            status_code=502,
        )
    try:
        body: Json = resp.json()
    except ValueError:
        body = None
    if resp.status_code != 200 or not isinstance(body, dict) or body.get("ok") is not True:
        detail: Json = None
        if isinstance(body, dict):
            detail = body.get("error") or body.get("message")
        detail = detail or resp.text[:500] or f"HTTP {resp.status_code}"
        return JSONResponse(
            {"ok": False, "status": resp.status_code, "error": f"sync failed: {detail}"},
            status_code=502,
        )
    record = engine.syncs.get(sync_id)
    if record is None:
        return JSONResponse(
            {
                "ok": False,
                "error": "the app answered the sync but registered somewhere else: point its "
                f"INNGEST_BASE_URL (or api_base_url) at {own_url}",
            },
            status_code=502,
        )
    return JSONResponse({"ok": True, **record})


def run(config: ExecutorConfig) -> None:
    """Serve until SIGINT/SIGTERM; print ``INNGEST_BASE_URL=...`` once listening."""
    sock = serving.listen(
        config.host,
        config.port,
        what="The executor",
        hint="Is another executor or inngest-cli dev running there? Pick another --port.",
    )
    url = f"http://{config.host}:{sock.getsockname()[1]}"
    serving.run(create_app(config), sock, ready_key="INNGEST_BASE_URL", url=url)
