"""One call to the app's serve handler, and what its answer means.

:class:`Caller` builds the body the SDK validates strictly, signs it when the executor
has a signing key, and classifies the answer as a :class:`Reply`: the function is done,
it returned ops, it failed, or the app could not be reached (which costs no attempt).
"""

from __future__ import annotations

import email.utils
import json
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import httpx

from tripkit import signing
from tripkit.devstack.executor.config import ExecutorConfig
from tripkit.devstack.executor.protocol import DISCOVERY_STEP_ID, Header, QueryParam
from tripkit.devstack.executor.records import RunRecord, error_dict, error_from
from tripkit.devstack.executor.registry import FunctionEntry, Json, now_utc


def parse_when(value: str, now: datetime) -> float | None:
    """Seconds from ``now`` to ``value``: delta seconds, an HTTP date or ISO-8601."""
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    moment: datetime | None
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


@dataclass
class Reply:
    """One SDK answer, classified."""

    kind: Literal["done", "ops", "error", "unreachable"]
    output: Json = None
    ops: list[dict[str, Json]] = field(default_factory=list)
    error: dict[str, Json] | None = None
    no_retry: bool = False
    retry_after: float | None = None
    sent_at: datetime = field(default_factory=now_utc)


class Caller:
    """The executor's HTTP client for the app: signed calls, classified answers."""

    def __init__(self, config: ExecutorConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        # No cap on connections: a capped httpx pool can lose a slot for good when a call
        # is cancelled (a cancelled run) at the wrong moment (encode/httpcore#1093), and
        # calls are bounded by the functions' concurrency limits, as on Inngest.
        self.client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=50),
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def request_body(self, run: RunRecord, fn: FunctionEntry, attempt: int) -> dict[str, Json]:
        """The body the SDK validates strictly (see the protocol notes)."""
        events = [e.payload() for e in run.events]
        return {
            "event": events[0],
            "events": events,
            "steps": dict(run.memo),
            "use_api": False,
            "ctx": {
                "run_id": run.run_id,
                "attempt": attempt,
                "max_attempts": fn.max_attempts,
                "disable_immediate_execution": False,
                "use_api": False,
                "stack": {"stack": list(run.stack), "current": len(run.stack)},
            },
        }

    @staticmethod
    def call_url(fn: FunctionEntry, target: str | None) -> str:
        parts = urllib.parse.urlsplit(fn.url)
        query = [
            (k, v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if k not in (QueryParam.FUNCTION_ID, QueryParam.STEP_ID)
        ]
        query += [
            (QueryParam.FUNCTION_ID, fn.id),
            (QueryParam.STEP_ID, target or DISCOVERY_STEP_ID),
        ]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def signed_headers(self, body: bytes) -> dict[str, str]:
        headers: dict[str, str] = {
            Header.CONTENT_TYPE: "application/json",
            Header.USER_AGENT: "tripkit-devstack-executor",
            Header.SERVER_KIND: self.config.server_kind,
            Header.REQUEST_ID: uuid.uuid4().hex,
        }
        if self.config.signing_key:
            headers[Header.SIGNATURE] = signing.sign(body, self.config.signing_key)
        return headers

    async def send(
        self, run: RunRecord, fn: FunctionEntry, target: str | None, attempt: int
    ) -> Reply:
        async with run.lock:
            body = json.dumps(self.request_body(run, fn, attempt)).encode()
        sent_at = now_utc()
        run.sdk_calls += 1
        url = self.call_url(fn, target)
        try:
            resp = await self.client.post(
                url,
                content=body,
                headers=self.signed_headers(body),
                timeout=self.config.request_timeout,
            )
        except httpx.ConnectTimeout as err:
            return _down(f"connecting to {fn.url} timed out ({err!r})", sent_at)
        except httpx.TimeoutException:
            return Reply(
                "error",
                error=error_dict(
                    "RequestTimeout",
                    f"the app did not answer within {self.config.request_timeout:g} s",
                ),
                sent_at=sent_at,
            )
        except httpx.TransportError as err:
            return _down(f"{type(err).__name__} calling {fn.url}: {err}", sent_at)
        return self.classify(resp, sent_at)

    def classify(self, resp: httpx.Response, sent_at: datetime) -> Reply:
        status, headers, content = resp.status_code, resp.headers, resp.content
        if status in (502, 503, 504):
            return _down(f"HTTP {status} from the app's address", sent_at)
        if Header.SDK not in headers:
            if status in (401, 403) and headers.get(Header.SDK_HANDLED) == "true":
                hint = (
                    "the executor's signing key differs from the app's INNGEST_SIGNING_KEY"
                    if self.config.signing_key
                    else "the app runs in production mode: give the executor its signing key, "
                    "or set INNGEST_DEV=1 for the app"
                )
                return Reply(
                    "error",
                    error=error_dict(
                        "SignatureRejected", f"the app refused the call ({status}): {hint}"
                    ),
                    sent_at=sent_at,
                )
            return _down(
                f"HTTP {status} without an x-inngest-sdk header: not the Inngest SDK "
                "(wrong URL or serve path, or the app is restarting)",
                sent_at,
            )
        if self.config.signing_key:
            signed = b"null" if status == 201 else content  # streaming: the SDK signs no body
            try:
                signing.verify(
                    headers.get(Header.SIGNATURE),
                    signed,
                    self.config.signing_key,
                    fallback=self.config.signing_key_fallback,
                    canonicalize=False,
                )
            except signing.SignatureError as err:
                return Reply(
                    "error",
                    error=error_dict("SignatureInvalid", f"the app's answer: {err.message}"),
                    sent_at=sent_at,
                )
        if status == 201:  # INNGEST_STREAMING=force: keepalive spaces, then the real answer
            try:
                wrapped = json.loads(content.strip() or b"null")
                status = int(wrapped["status"])
                inner_headers = {str(k).lower(): str(v) for k, v in wrapped["headers"].items()}
                content = str(wrapped["body"]).encode()
            except (ValueError, KeyError, TypeError, AttributeError):
                return _protocol("a streamed answer that is not {body, headers, status}", sent_at)
            return self._interpret(status, inner_headers, content, sent_at)
        return self._interpret(status, dict(headers), content, sent_at)

    def _interpret(
        self, status: int, headers: dict[str, str], content: bytes, sent_at: datetime
    ) -> Reply:
        try:
            body: Json = json.loads(content) if content.strip() else None
        except ValueError:
            return _protocol(f"HTTP {status} with a body that is not JSON", sent_at)
        no_retry = headers.get(Header.NO_RETRY, "").lower() == "true"
        retry_after_raw = headers.get(Header.RETRY_AFTER)
        retry_after = parse_when(retry_after_raw, now_utc()) if retry_after_raw else None
        if status == 200:
            return Reply("done", output=body, sent_at=sent_at)
        if status == 206:
            if not isinstance(body, list) or not body:
                return _protocol("HTTP 206 whose body is not a non-empty list of ops", sent_at)
            for op in body:
                if not isinstance(op, dict) or not isinstance(op.get("id"), str):
                    return _protocol(f"an op without an id: {op!r}"[:500], sent_at)
                if not isinstance(op.get("op"), str):
                    return _protocol(f"an op without an opcode: {op!r}"[:500], sent_at)
            return Reply(
                "ops", ops=body, no_retry=no_retry, retry_after=retry_after, sent_at=sent_at
            )
        fallback = f"the function failed (HTTP {status})"
        error = error_from(body, fallback)
        error["error"] = f"invalid status code: {status}"  # what Inngest's server records
        return Reply(
            "error",
            error=error,
            no_retry=no_retry,
            retry_after=retry_after,
            sent_at=sent_at,
        )


def _down(message: str, sent_at: datetime) -> Reply:
    return Reply("unreachable", error=error_dict("AppUnreachable", message), sent_at=sent_at)


def _protocol(message: str, sent_at: datetime) -> Reply:
    return Reply("error", error=error_dict("ProtocolError", message), sent_at=sent_at)
