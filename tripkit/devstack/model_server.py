"""An offline stand-in for OpenAI's Chat Completions API that plans trips deterministically.

Pointing ``OPENAI_BASE_URL`` here lets the worker's real ``openai`` client run offline: the
wire protocol (auth, errors, SSE chunks, the final usage chunk) follows OpenAI's, the
answers come from :mod:`tripkit.devstack.trip_planner`, and tests can switch faults on over
HTTP (``/_control/...``, not part of OpenAI's API) to exercise retries and cut streams.

Run it with ``python -m tripkit.devstack.model_server --port 8808``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tripkit.devstack import serving
from tripkit.devstack.openai_wire import (
    BadRequest,
    Completion,
    EventStream,
    bad_key,
    error_response,
    limit_reply,
    parse_request,
    pieces,
    sse,
    token_usage,
)
from tripkit.devstack.trip_planner import NOT_A_TRIP_REPLY, answer, parse_task
from tripkit.errors import ConfigError

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4.1-mini", "gpt-5-mini", "gpt-5.4-mini", "gpt-5.4-nano")
_MODEL_CREATED = 1_700_000_000  # a fixed date, so model listings are reproducible

TaskName = Literal["bundle", "other"]


class ModelServerConfig(BaseModel):
    """How the stand-in server listens and paces its streams."""

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port.")
    api_key: SecretStr | None = Field(
        default=None, description="If set, the only accepted key; otherwise any non-empty key."
    )
    models: tuple[str, ...] = Field(default=DEFAULT_MODELS, min_length=1)
    chunk_delay: float = Field(default=0.0, ge=0, le=10, description="Seconds between chunks.")
    chunk_size: int = Field(default=6, ge=1, le=4096, description="Most characters per chunk.")


class Fault(BaseModel):
    """One injected failure: an HTTP error status, or a stream cut after some content chunks.

    ``times`` is how many matching completion calls it hits (-1: until reset); ``task`` and
    ``index`` narrow it to some calls (``"bundle"`` with index 2: only bundle 2's calls).
    """

    model_config = ConfigDict(extra="forbid")

    status: int | None = Field(default=None, ge=400, le=599)
    cut_after_chunks: int | None = Field(default=None, ge=0)
    cut_mode: Literal["abort", "eof"] = Field(
        default="abort",
        description="abort: drop the connection mid-body; eof: end the body cleanly but early.",
    )
    times: int = Field(default=1, ge=-1)
    retry_after: float | None = Field(default=None, ge=0)
    task: TaskName | None = None
    index: int | None = Field(default=None, ge=0)
    message: str | None = None
    code: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Fault:
        if (self.status is None) == (self.cut_after_chunks is None):
            raise ValueError("give exactly one of status or cut_after_chunks")
        if self.times == 0:
            raise ValueError("times must be positive, or -1 for until reset")
        return self

    def matches(self, task: TaskName, index: int | None, *, stream: bool) -> bool:
        if self.cut_after_chunks is not None and not stream:
            return False  # only a stream can be cut
        return (self.task is None or self.task == task) and (
            self.index is None or self.index == index
        )


@dataclass
class _Armed:
    fault: Fault
    remaining: int  # -1: forever

    def to_json(self) -> dict[str, Any]:
        shown = self.fault.model_dump(exclude_none=True)
        if self.fault.cut_after_chunks is None:
            del shown["cut_mode"]
        return {**shown, "remaining": self.remaining}


@dataclass
class _State:
    """Faults and call statistics; touched only from the server's event loop."""

    faults: list[_Armed] = field(default_factory=list)
    by_task: Counter[str] = field(default_factory=Counter)
    by_outcome: Counter[str] = field(default_factory=Counter)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def take_fault(self, task: TaskName, index: int | None, *, stream: bool) -> Fault | None:
        """The first armed fault for this call, used up by one."""
        for armed in self.faults:
            if armed.fault.matches(task, index, stream=stream):
                if armed.remaining > 0:
                    armed.remaining -= 1
                if armed.remaining == 0:
                    self.faults.remove(armed)
                return armed.fault
        return None

    def record(
        self, task: str, index: int | None, outcome: str, *, model: str = "", stream: bool = False
    ) -> None:
        self.by_task[task] += 1
        self.by_outcome[outcome] += 1
        self.calls.append(
            {"task": task, "index": index, "outcome": outcome, "model": model, "stream": stream}
        )

    def stats(self) -> dict[str, Any]:
        served = [
            {"task": c["task"], "index": c["index"]} for c in self.calls if c["outcome"] == "ok"
        ]
        return {
            "total": len(self.calls),
            "byTask": dict(self.by_task),
            "byOutcome": dict(self.by_outcome),
            "served": served,
            "calls": list(self.calls),
        }


def _fault_response(fault: Fault, model: str, key: str) -> JSONResponse:
    status = fault.status or 500
    headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
    if status == 401 and fault.message is None:
        return bad_key(key)
    if status == 429:
        wait = fault.retry_after if fault.retry_after is not None else 20
        message = (
            f"Rate limit reached for {model} in organization org-devstack on requests per min "
            f"(RPM): Limit 3, Used 3, Requested 1. Please try again in {wait:g}s."
        )
        type_, code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        message = "The server had an error while processing your request. Sorry about that!"
        type_, code = "server_error", None
    else:
        message, type_, code = f"Injected fault: HTTP {status}.", "invalid_request_error", None
    return error_response(
        status,
        fault.message or message,
        type_=type_,
        code=fault.code or code,
        headers=headers,
    )


# --- the app ------------------------------------------------------------------------------


def create_app(settings: ModelServerConfig) -> ASGIApp:
    """The ASGI app: OpenAI's ``/v1`` routes plus the test-only ``/_control`` routes."""
    state = _State()
    models = settings.models
    wanted_key = (settings.api_key.get_secret_value() if settings.api_key else "") or None

    def check_key(request: Request) -> tuple[str, JSONResponse | None]:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return "", error_response(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="invalid_api_key",
            )
        if wanted_key is not None and not secrets.compare_digest(key, wanted_key):
            return key, bad_key(key)
        return key, None

    def no_model(model: str) -> JSONResponse:
        return error_response(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )

    def model_card(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": _MODEL_CREATED, "owned_by": "devstack"}

    async def chat_completions(request: Request) -> Response:
        key, denied = check_key(request)
        if denied is not None:
            state.record("unknown", None, "401")
            return denied
        try:
            body = parse_request(await request.body())
        except BadRequest as refused:
            state.record("unknown", None, "400")
            return refused.response
        if body.model not in models:
            state.record("unknown", None, "404", model=body.model)
            return no_model(body.model)
        stream = bool(body.stream)

        prompt = next((m.text for m in reversed(body.messages) if m.role == "user"), "")
        task = parse_task(prompt)
        name: TaskName = "other" if task is None else "bundle"
        index = None if task is None else task.index

        fault = state.take_fault(name, index, stream=stream)
        if fault is not None and fault.status is not None:
            state.record(name, index, str(fault.status), model=body.model, stream=stream)
            return _fault_response(fault, body.model, key)

        reply, finish = limit_reply(answer(task) if task is not None else NOT_A_TRIP_REPLY, body)
        completion = Completion(
            id=f"chatcmpl-{secrets.token_hex(12)}",
            model=body.model,
            created=int(time.time()),
            reply=reply,
            usage=token_usage(body.messages, reply),
            finish_reason=finish,
        )
        if not stream:
            state.record(name, index, "ok", model=body.model)
            return JSONResponse(completion.whole())

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        cut = fault

        async def events() -> AsyncIterator[bytes | None]:
            yield completion.chunk(
                {"role": "assistant", "content": "", "refusal": None}, include_usage=include_usage
            )
            for sent, piece in enumerate(pieces(reply, settings.chunk_size)):
                if cut is not None and sent == cut.cut_after_chunks:
                    state.record(name, index, "cut", model=body.model, stream=True)
                    if cut.cut_mode == "abort":
                        yield None
                    return
                if settings.chunk_delay:
                    await asyncio.sleep(settings.chunk_delay)
                yield completion.chunk({"content": piece}, include_usage=include_usage)
            yield completion.chunk({}, finish=finish, include_usage=include_usage)
            if include_usage:
                yield completion.usage_chunk()
            state.record(name, index, "ok", model=body.model, stream=True)
            yield sse("[DONE]")

        return EventStream(events())

    async def list_models(request: Request) -> Response:
        _, denied = check_key(request)
        if denied is not None:
            return denied
        return JSONResponse({"object": "list", "data": [model_card(m) for m in models]})

    async def get_model(request: Request) -> Response:
        _, denied = check_key(request)
        if denied is not None:
            return denied
        model = str(request.path_params["model"])
        return JSONResponse(model_card(model)) if model in models else no_model(model)

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                raw = json.loads(await request.body())
                items = raw if isinstance(raw, list) else [raw]
                new = [Fault.model_validate(item) for item in items]
            except (ValueError, ValidationError) as err:
                return error_response(422, f"Invalid fault: {err}")
            state.faults += [_Armed(f, f.times) for f in new]
        elif request.method == "DELETE":
            state.faults.clear()
        return JSONResponse({"faults": [a.to_json() for a in state.faults]})

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def reset(request: Request) -> Response:
        state.faults.clear()
        state.by_task.clear()
        state.by_outcome.clear()
        state.calls.clear()
        return JSONResponse({"ok": True})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": list(models)})

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        return error_response(status, f"Invalid URL ({request.method} {request.url.path})")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", get_model, methods=["GET"]),
            Route("/_control/faults", faults, methods=["GET", "POST", "DELETE"]),
            Route("/_control/stats", stats, methods=["GET"]),
            Route("/_control/reset", reset, methods=["POST"]),
            Route("/_control/health", health, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: not_found},
    )


# --- serving ------------------------------------------------------------------------------


def _base_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}/v1"


def run(config: ModelServerConfig) -> None:
    """Serve until interrupted; prints ``OPENAI_BASE_URL=...`` once listening."""
    sock = serving.listen(
        config.host,
        config.port,
        what="The model server",
        hint="Pick another --port (0: a free one).",
    )
    url = _base_url(config.host, sock.getsockname()[1])
    serving.run(create_app(config), sock, ready_key="OPENAI_BASE_URL", url=url, lifespan="off")


class BackgroundServer(serving.ThreadedServer):
    """A model server on a daemon thread, for tests and notebooks: ``with ... as srv:``."""

    what = "The model server"
    thread_name = "model-server"

    def __init__(self, config: ModelServerConfig | None = None) -> None:
        config = config or ModelServerConfig()
        super().__init__(create_app(config), host=config.host, port=config.port, lifespan="off")

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, ready for ``OPENAI_BASE_URL``."""
        return "" if self.port is None else _base_url(self.host, self.port)

    def start_failed(self, reason: str) -> Exception:
        return RuntimeError("the model server did not start (is the port in use?)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tripkit.devstack.model_server",
        description="Offline OpenAI-compatible server that plans trips deterministically.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--chunk-size", type=int, default=6, help="most characters per chunk")
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any)")
    parser.add_argument(
        "--model", action="append", dest="models", help="a served model id (repeatable)"
    )
    args = parser.parse_args(argv)
    try:
        config = ModelServerConfig(
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            models=tuple(args.models or DEFAULT_MODELS),
            chunk_delay=args.chunk_delay,
            chunk_size=args.chunk_size,
        )
    except ValidationError as err:
        parser.error(str(err))
    try:
        run(config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
