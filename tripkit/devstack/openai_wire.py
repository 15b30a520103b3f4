"""OpenAI's Chat Completions wire format, as the offline model server speaks it.

The request the ``openai`` client sends, the error bodies OpenAI answers with, token
usage, and the answer itself: whole, or as server-sent chunks ending in a usage chunk.
Nothing here decides what to answer (:mod:`tripkit.devstack.model_server` does, from
:mod:`tripkit.devstack.trip_planner`); this is only the shape of it on the wire.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

CHARS_PER_TOKEN = 4
FINGERPRINT = "fp_tripkit_devstack"


# --- the request and the errors --------------------------------------------------------


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = self.content or []
        return "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None


def error_response(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def mask_key(key: str) -> str:
    """OpenAI's way of naming a key without revealing it: a few ends, stars between."""
    if len(key) < 12:
        return "*" * len(key)
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


def bad_key(key: str) -> JSONResponse:
    return error_response(
        401,
        f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )


def validation_error(err: ValidationError) -> JSONResponse:
    first = err.errors()[0]
    param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
    if first["type"] == "missing":
        return error_response(
            400,
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    return error_response(
        400,
        f"Invalid value for '{param or 'body'}': {first['msg']}.",
        param=param or None,
        code="invalid_value",
    )


# --- the completion itself --------------------------------------------------------------


def tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def token_usage(messages: Sequence[Message], reply: str) -> dict[str, Any]:
    """A deterministic estimate: about four characters per token, plus per-message overhead."""
    prompt = 3 + sum(4 + tokens(m.role) + tokens(m.text) for m in messages)
    completion = max(1, tokens(reply))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def pieces(text: str, most: int) -> Iterator[str]:
    """Split ``text`` into pieces of 1..``most`` characters, sizes varying deterministically."""
    start = 0
    for n in range(len(text)):
        if start >= len(text):
            return
        size = 1 + (n * 5 + 3) % most
        yield text[start : start + size]
        start += size


@dataclass(frozen=True)
class Completion:
    id: str
    model: str
    created: int
    reply: str
    usage: dict[str, Any]

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }

    def chunk(
        self,
        delta: dict[str, Any],
        *,
        finish: str | None = None,
        include_usage: bool = False,
    ) -> bytes:
        """One streamed piece of the answer (``usage: null`` when usage was asked for)."""
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        body = self._chunk([choice])
        if include_usage:
            body["usage"] = None
        return sse(body)

    def usage_chunk(self) -> bytes:
        """The last chunk of a stream that asked for usage: no choices, the usage."""
        return sse({**self._chunk([]), "usage": self.usage})

    def whole(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": self.reply,
            "refusal": None,
            "annotations": [],
        }
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": self.usage,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }


def sse(body: dict[str, Any] | str) -> bytes:
    data = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class EventStream(Response):
    """SSE whose events may end in ``None``: then the connection drops without a clean end."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes | None]) -> None:
        self._events = events
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # uvicorn drops writes to a closed connection silently, so watch for the client
        # going away (the app was killed mid-stream): a stream nobody read is not "served".
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for event in self._events:
                if event is None:
                    return  # uvicorn closes the connection mid-body, as a network cut would
                if gone.is_set():
                    return
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            await self._events.aclose()  # type: ignore[attr-defined]
