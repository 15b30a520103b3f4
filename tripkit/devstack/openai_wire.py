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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

CHARS_PER_TOKEN = 4
FINGERPRINT = "fp_tripkit_devstack"


# --- the request and the errors --------------------------------------------------------


class Message(BaseModel):
    """One chat message: text only (a part or field this server cannot read is refused)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    refusal: str | None = None  # an assistant message echoed back as the API returned it

    @model_validator(mode="after")
    def _text_parts_only(self) -> Message:
        for i, part in enumerate(self.content if isinstance(self.content, list) else []):
            kind = part.get("type")
            if kind != "text" or not isinstance(part.get("text"), str) or len(part) != 2:
                raise ValueError(
                    f"content part {i} ({kind!r}) is not a text part "
                    '({"type": "text", "text": ...}); this server reads text only'
                )
        return self

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p["text"]) for p in self.content or [])


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    include_obfuscation: bool = False  # the server never pads chunks, so only false


class ChatRequest(BaseModel):
    """The parameters this server honours; every other one is refused (see parse_request).

    The sampling knobs (``temperature``, ``top_p``, the penalties, ``seed``) are
    checked for range and honoured trivially: a deterministic answer is a valid sample
    under any of them. ``user`` and ``safety_identifier`` only label the caller.
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    logprobs: bool | None = None
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    user: str | None = None
    safety_identifier: str | None = None

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_sequences(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


#: Parameters of OpenAI's Chat Completions this server does not implement, and why; each
#: is a 400 naming it (null counts as not sent). Anything else unknown is a 400 too.
UNSUPPORTED: dict[str, str] = {
    "response_format": "it answers with plain text only",
    "tools": "it never calls tools",
    "tool_choice": "it never calls tools",
    "parallel_tool_calls": "it never calls tools",
    "functions": "it never calls functions",
    "function_call": "it never calls functions",
    "top_logprobs": "it returns no log probabilities",
    "logit_bias": "it does not sample tokens",
    "audio": "it answers with text only",
    "modalities": "it answers with text only",
    "prediction": "it has no predicted outputs",
    "web_search_options": "it does not search the web",
    "reasoning_effort": "it does not reason",
    "verbosity": "its answers have one length",
    "service_tier": "it has one tier",
    "store": "it stores no completions",
    "metadata": "it stores no completions",
    "prompt_cache_key": "it has no prompt cache",
    "prompt_cache_retention": "it has no prompt cache",
}


class BadRequest(Exception):
    """A request refused with OpenAI's error body; ``response`` is what to answer."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.body)
        self.response = response


def parse_request(body: bytes) -> ChatRequest:
    """The request, or :class:`BadRequest` for anything this server would not honour.

    A parameter accepted and ignored would give a local answer unlike the real API's
    (JSON mode, tool calls, several choices) without a word; here it is a 400 that names
    it, as the API answers a parameter a model does not support.
    """
    try:
        data = json.loads(body)
    except ValueError:
        raise BadRequest(
            error_response(400, "We could not parse the JSON body of your request.")
        ) from None
    if not isinstance(data, dict):
        raise BadRequest(error_response(400, "The request body must be a JSON object."))
    for name, value in data.items():
        if name in ChatRequest.model_fields:
            continue
        if name in UNSUPPORTED:
            if value is None:
                continue
            raise BadRequest(
                error_response(
                    400,
                    f"Unsupported parameter: '{name}' is not supported by tripkit's offline "
                    f"model server: {UNSUPPORTED[name]}.",
                    param=name,
                    code="unsupported_parameter",
                )
            )
        raise BadRequest(
            error_response(
                400,
                f"Unrecognized request argument supplied: {name}",
                param=name,
                code="unknown_parameter",
            )
        )
    try:
        request = ChatRequest.model_validate(
            {k: v for k, v in data.items() if k in ChatRequest.model_fields}
        )
    except ValidationError as err:
        raise BadRequest(validation_error(err)) from None
    _check_values(request)
    return request


def _unsupported_value(param: str, message: str) -> BadRequest:
    return BadRequest(
        error_response(400, f"Unsupported value: {message}", param=param, code="unsupported_value")
    )


def _check_values(request: ChatRequest) -> None:
    if request.n not in (None, 1):
        raise _unsupported_value("n", "'n' must be 1 here: this server gives one choice.")
    if request.logprobs:
        raise _unsupported_value("logprobs", "this server returns no log probabilities.")
    options = request.stream_options
    if options is not None and not request.stream:
        raise BadRequest(
            error_response(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        )
    if options is not None and options.include_obfuscation:
        raise _unsupported_value(
            "stream_options.include_obfuscation", "this server never pads its chunks."
        )
    if request.max_tokens is not None and request.max_completion_tokens is not None:
        raise BadRequest(
            error_response(
                400,
                "Give one of 'max_tokens' and 'max_completion_tokens', not both.",
                param="max_tokens",
                code="invalid_value",
            )
        )
    stops = request.stop_sequences
    if len(stops) > 4 or not all(stops):
        raise BadRequest(
            error_response(
                400,
                "Invalid value for 'stop': up to 4 non-empty sequences.",
                param="stop",
                code="invalid_value",
            )
        )


def limit_reply(reply: str, request: ChatRequest) -> tuple[str, str]:
    """The reply cut at the first stop sequence, then at the token limit; and why it ended.

    Tokens are this server's estimate (:func:`tokens`), so a limit of N keeps 4N
    characters, and the usage reported matches what was sent.
    """
    finish = "stop"
    for stop in request.stop_sequences:
        at = reply.find(stop)
        if at >= 0:
            reply = reply[:at]
    limit = request.token_limit
    if limit is not None and len(reply) > limit * CHARS_PER_TOKEN:
        reply, finish = reply[: limit * CHARS_PER_TOKEN], "length"
    return reply, finish


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
    if first["type"] == "extra_forbidden":
        return error_response(
            400,
            f"Unsupported parameter: '{param}' is not supported by tripkit's offline model server.",
            param=param,
            code="unsupported_parameter",
        )
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
    finish_reason: str = "stop"  # "length" when max_completion_tokens cut the reply

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
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
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
