"""Upstash's REST protocol, as a thin client on httpx.

Why not the official ``upstash-redis`` SDK (1.8.0)? Its HTTP client has no timeout, it
retries any failed request once after 3 s (so a write can run twice), it never checks
the HTTP status, a failing command in a pipeline loses the other results, ``hset`` drops
falsy values, and with base64 on a non-UTF-8 value raises on read. This client instead:

- sets a timeout on every request;
- retries only when the caller marks a command ``retry_safe``, and then only once, on a
  connection failure or timeout;
- checks the HTTP status and maps Upstash's errors (401 WRONGPASS, quota messages, 5xx)
  to typed tripkit errors;
- asks for ``Upstash-Encoding: base64`` so any bytes round-trip, and decodes every
  string except the literal ``OK`` (which Upstash leaves as is);
- returns per-command errors of a pipeline in place, keeping the other results;
- sends back ``upstash-sync-token`` for read-your-writes across replicas.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import httpx

from tripkit.config import Settings
from tripkit.errors import (
    CommandError,
    ConfigError,
    RedisAuthError,
    RedisTimeout,
    RedisUnavailable,
    StoreError,
)
from tripkit.transport import Arg, CommandCounter, Reply, error_from_reply


def _arg(value: Arg) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the REST transport can only send UTF-8 arguments") from None
    return str(value)


def _decode(value: Any) -> Reply:
    """Undo ``Upstash-Encoding: base64`` recursively; ``OK`` is sent as is."""
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, str):
        if value == "OK":
            return b"OK"
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise StoreError("Upstash sent a malformed base64 reply.") from None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) or value is None:
        return value
    raise StoreError(f"Upstash sent an unexpected reply type: {type(value).__name__}.")


class RestTransport:
    """Commands as JSON arrays POSTed to the Upstash REST URL."""

    name = "rest"

    def __init__(self, url: str, token: str, *, timeout: float = 5.0) -> None:
        self.counter = CommandCounter()
        self.url = url.rstrip("/")
        self._sync_token: str | None = None
        self._client = httpx.AsyncClient(
            base_url=self.url,
            timeout=httpx.Timeout(timeout),
            headers={
                "Authorization": f"Bearer {token}",
                "Upstash-Encoding": "base64",
            },
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> RestTransport:
        if settings.upstash_redis_rest_url is None:
            raise ConfigError("UPSTASH_REDIS_REST_URL is not set.")
        if settings.upstash_redis_rest_token is None:
            raise ConfigError(
                "UPSTASH_REDIS_REST_TOKEN is not set.",
                remedy="Copy it from the Upstash console ('REST API' section) into .env.local.",
            )
        return cls(
            settings.upstash_redis_rest_url,
            settings.upstash_redis_rest_token.get_secret_value(),
            timeout=settings.redis_timeout,
        )

    async def _post(self, path: str, body: Any, names: list[str], *, retry_safe: bool) -> Any:
        headers = {"upstash-sync-token": self._sync_token} if self._sync_token else None
        attempts = 2 if retry_safe else 1
        for attempt in range(attempts):
            for name in names:  # every attempt may reach Upstash, and each is billed
                self.counter.add(name)
            try:
                response = await self._client.post(path, json=body, headers=headers)
                break
            except httpx.TimeoutException:
                if attempt + 1 < attempts:
                    continue
                raise RedisTimeout(f"Upstash at {self.url} did not answer in time.") from None
            except httpx.TransportError as exc:
                if attempt + 1 < attempts:
                    continue
                raise RedisUnavailable(
                    f"Cannot reach Upstash at {self.url}: {type(exc).__name__}."
                ) from None
        if token := response.headers.get("upstash-sync-token"):
            self._sync_token = token
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code == 401:
            raise RedisAuthError("Upstash refused the token (401 WRONGPASS).")
        if response.status_code >= 500 or payload is None:
            raise RedisUnavailable(
                f"Upstash at {self.url} answered HTTP {response.status_code}"
                + (f": {payload.get('error')}" if isinstance(payload, dict) else "")
                + "."
            )
        if response.status_code == 400 and isinstance(payload, dict) and "error" in payload:
            raise error_from_reply(str(payload["error"]))
        if response.status_code != 200:
            raise RedisUnavailable(f"Upstash at {self.url} answered HTTP {response.status_code}.")
        return payload

    async def execute(self, *args: Arg, retry_safe: bool = False) -> Reply:
        body = [_arg(a) for a in args]
        payload = await self._post("/", body, [str(args[0])], retry_safe=retry_safe)
        if not isinstance(payload, dict) or "result" not in payload:
            raise StoreError("Upstash sent a reply without a result.")
        return _decode(payload["result"])

    async def pipeline(self, *commands: list[Arg]) -> list[Reply | CommandError]:
        body = [[_arg(a) for a in command] for command in commands]
        names = [str(command[0]) for command in commands]
        payload = await self._post("/pipeline", body, names, retry_safe=False)
        if not isinstance(payload, list) or len(payload) != len(commands):
            raise StoreError("Upstash sent a pipeline reply of the wrong shape.")
        out: list[Reply | CommandError] = []
        for item in payload:
            if isinstance(item, dict) and "error" in item:
                err = error_from_reply(str(item["error"]))
                if not isinstance(err, CommandError):
                    raise err
                out.append(err)
            elif isinstance(item, dict) and "result" in item:
                out.append(_decode(item["result"]))
            else:
                raise StoreError("Upstash sent a pipeline item of the wrong shape.")
        return out

    async def aclose(self) -> None:
        await self._client.aclose()
