"""The yardsticks ``bench/endpoints.py`` measures tripkit's routes against.

Two endpoints that do the least an app can do for the same job, on the same Redis:

- ``GET /session/{id}``: one Redis ``GET`` of the session document, returned as is;
- ``POST /enqueue``: one RQ enqueue (what a plain job-queue app does for a request).

Served by uvicorn with the same settings as tripkit's app. ``REDIS_URL`` says where Redis is.
"""

from __future__ import annotations

import os

import redis
import redis.asyncio
from rq import Queue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tripkit.keys import session_key

REDIS_URL = os.environ["REDIS_URL"]
PREFIX = os.environ.get("TRIPKIT_KEY_PREFIX", "tripkit")

_async = redis.asyncio.Redis.from_url(REDIS_URL, max_connections=64)
_queue = Queue("bench", connection=redis.Redis.from_url(REDIS_URL))


async def get_session(request: Request) -> Response:
    raw = await _async.get(session_key(PREFIX, request.path_params["session_id"]))
    if raw is None:
        return JSONResponse({"error": "Session not found"}, status_code=404)
    return Response(raw, media_type="application/json")


def enqueue(request: Request) -> JSONResponse:
    # A sync endpoint (RQ is synchronous): Starlette runs it in its thread pool.
    job = _queue.enqueue("bench.generate", ttl=3600)
    return JSONResponse({"jobId": job.id}, status_code=202)


app = Starlette(
    routes=[
        Route("/session/{session_id}", get_session),
        Route("/enqueue", enqueue, methods=["POST"]),
    ]
)
