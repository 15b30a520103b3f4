"""The LLM client: the prompt contract, streaming, and parsing the stream as it lands.

The real ``openai`` client streams Chat Completions with usage included, from
``OPENAI_BASE_URL`` (OpenAI itself, or tripkit's offline model server). One call per
bundle: the model picks the destination of bundle *i* (none of those the earlier bundles
took) and answers two NDJSON lines, ``{"summary": {...}}`` then ``{"bundle": {...}}``, so
the summary can be written to the session before the long bundle has finished streaming.
There is no separate planning call: choosing the destination is part of the bundle's
answer, so each bundle is one model call and one Inngest step.

The request itself is a fenced JSON block at the end of the user message, so a real
model and the offline server read the same prompt.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import openai
from pydantic import ValidationError

from tripkit.errors import TripkitError
from tripkit.models import Bundle, Preferences, Summary, TokenUsage

SYSTEM_PROMPT = """You are a travel planner for the app "special-trips".
You answer only with JSON, never with prose or Markdown fences.
The request is the JSON block at the end of the user's message.
For {"task": "bundle", "index": i, "count": N, "avoid": ["...", ...]}: plan bundle i of N.
Choose the destination that fits the preferences best and is none of those in "avoid"
(the earlier bundles took them). Answer exactly two lines.
Line 1: {"summary": {"index": i, "title": "...", "destination": "...", "text": "2-4 sentences"}}
Line 2: {"bundle": {"index": i, "title": "...", "destination": "...", "country": "...",
"nights": <days-1>, "estimatedCost": <total for the party, within the budget>,
"currency": "<preferences currency>", "highlights": ["..."],
"itinerary": [{"day": 1, "title": "...", "activities": ["..."]}, ... one per day]}}
"""


class ModelError(TripkitError):
    """The model call failed. ``retriable`` says whether trying again can help."""

    retriable = True


class ModelAuthError(ModelError):
    retriable = False
    remedy = "The model API rejected the key: check OPENAI_API_KEY."


class ModelNotAvailable(ModelError):
    retriable = False
    remedy = "Check TRIPKIT_OPENAI_MODEL (or OPENAI_MODEL) against the models your key can use."


class ModelOutputError(ModelError):
    """The model answered, but not in the agreed format; a new attempt usually fixes it."""

    remedy = "The model's answer was malformed; the step is retried."


def request_message(request: dict[str, Any]) -> str:
    """The user message: a short instruction and the request as a fenced JSON block."""
    return (
        "Plan according to these preferences and answer in the format described.\n"
        f"```json\n{json.dumps(request, separators=(',', ':'))}\n```"
    )


def bundle_request(preferences: Preferences, index: int, avoid: Sequence[str]) -> dict[str, Any]:
    """Bundle ``index`` of ``preferences.bundle_count``, at none of the ``avoid`` places."""
    return {
        "task": "bundle",
        "preferences": preferences.model_dump(mode="json", by_alias=True),
        "index": index,
        "count": preferences.bundle_count,
        "avoid": list(avoid),
    }


class LineParser:
    """Splits streamed text into complete JSON lines, whatever the chunk boundaries."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, text: str) -> list[dict[str, Any]]:
        self._buffer += text
        *complete, self._buffer = self._buffer.split("\n")
        return [_json_line(line) for line in complete if line.strip()]

    def close(self) -> list[dict[str, Any]]:
        rest, self._buffer = self._buffer, ""
        return [_json_line(rest)] if rest.strip() else []


def _json_line(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        raise ModelOutputError(f"The model sent a line that is not JSON: {line[:80]!r}.") from None
    if not isinstance(value, dict):
        raise ModelOutputError("The model sent a JSON line that is not an object.")
    return value


def translate_error(exc: openai.OpenAIError) -> ModelError:
    """Map the client's exceptions to tripkit's, deciding what is worth a retry."""
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ModelAuthError(f"The model API answered {exc.status_code}.")
    if isinstance(exc, openai.NotFoundError):
        return ModelNotAvailable("The model API does not know the configured model.")
    if isinstance(exc, openai.RateLimitError):
        return ModelError("The model API is rate limiting (429); retrying with backoff.")
    if isinstance(exc, openai.APITimeoutError):
        return ModelError("The model API timed out; retrying.")
    if isinstance(exc, openai.APIConnectionError):
        return ModelError("Cannot reach the model API (check OPENAI_BASE_URL); retrying.")
    if isinstance(exc, openai.APIStatusError):
        retriable = exc.status_code >= 500 or exc.status_code in (408, 409)
        err = ModelError(f"The model API answered {exc.status_code}.")
        err.retriable = retriable
        return err
    return ModelError(f"The model call failed: {type(exc).__name__}.")


class ModelClient:
    """The call the worker makes, over one ``AsyncOpenAI`` client."""

    def __init__(self, client: openai.AsyncOpenAI, model: str) -> None:
        self.client = client
        self.model = model

    async def _stream(
        self, request: dict[str, Any], on_text: Callable[[str], Awaitable[None]]
    ) -> TokenUsage:
        usage = TokenUsage(model=self.model)
        finished = False
        try:
            stream = await self.client.chat.completions.create(
                model=self.model,
                messages=[
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": request_message(request)},
                ],
                stream=True,
                stream_options={"include_usage": True},
            )
            async with stream:  # closes the response even when on_text raises
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = TokenUsage(
                            model=chunk.model or self.model,
                            prompt_tokens=chunk.usage.prompt_tokens,
                            completion_tokens=chunk.usage.completion_tokens,
                        )
                    for choice in chunk.choices:
                        if choice.delta.content:
                            await on_text(choice.delta.content)
                        if choice.finish_reason is not None:
                            finished = True
        except openai.OpenAIError as exc:
            raise translate_error(exc) from None
        if not finished:
            raise ModelOutputError("The model's stream ended before it finished.")
        return usage

    async def bundle(
        self,
        preferences: Preferences,
        index: int,
        avoid: Sequence[str],
        on_summary: Callable[[Summary], Awaitable[None]],
    ) -> tuple[Summary, Bundle, TokenUsage]:
        """Stream bundle ``index``, at none of the ``avoid`` destinations; ``on_summary``
        runs as soon as the summary line is complete."""
        parser = LineParser()
        found: dict[str, Any] = {}

        async def take(lines: list[dict[str, Any]]) -> None:
            for line in lines:
                if "summary" in line and "summary" not in found:
                    found["summary"] = _validated(Summary, line["summary"], index)
                    await on_summary(found["summary"])
                elif "bundle" in line and "bundle" not in found:
                    found["bundle"] = _validated(Bundle, line["bundle"], index)

        async def on_text(text: str) -> None:
            await take(parser.feed(text))

        usage = await self._stream(bundle_request(preferences, index, avoid), on_text)
        await take(parser.close())
        if "summary" not in found or "bundle" not in found:
            raise ModelOutputError("The model's answer lacks the summary or the bundle line.")
        return found["summary"], found["bundle"], usage


def _validated(kind: type[Summary] | type[Bundle], value: Any, index: int) -> Any:
    if isinstance(value, dict):
        value = {**value, "index": index}
    try:
        return kind.model_validate(value)
    except ValidationError as exc:
        raise ModelOutputError(
            f"The model's {kind.__name__.lower()} is malformed ({exc.error_count()} problems)."
        ) from None
