"""The HTTP API over real HTTP: the offline stack's app process, and apps of our own.

Dev mode (unsigned) uses the session ``stack``; the signed production mode gets its own
stack, whose executor signs every call and whose app (the SDK plus our Guard) verifies.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from helpers import ServerThread, free_port, wait_final
from pydantic import SecretStr

from tripkit import signing
from tripkit.api import MAX_API_BODY, create_app
from tripkit.config import load_settings
from tripkit.constants import FUNCTION_SLUG
from tripkit.devstack.stack import LocalStack, StackConfig

PREFS: dict[str, Any] = {
    "interests": ["food", "museums"],
    "tripLengthDays": 3,
    "budget": 2400,
    "currency": "EUR",
    "travellers": 2,
    "bundleCount": 2,
}
SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
EVENT_NAME = "trips/bundles.requested"
SIGNING_KEY = "signkey-test-" + secrets.token_hex(32)
WRONG_KEY = "signkey-test-" + secrets.token_hex(32)


def problems_of(response: httpx.Response) -> list[dict[str, str]]:
    """The 422 body's problems, after checking the error shape common to all of them."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == "Invalid request"
    problems: list[dict[str, str]] = body["problems"]
    assert problems, body
    for problem in problems:
        assert set(problem) == {"field", "message"}
        assert problem["field"] and problem["message"]
    return problems


# ------------------------------------------------------------------------ dev mode


def test_generate_returns_202_with_poll_url_then_the_session(stack: LocalStack) -> None:
    with httpx.Client(base_url=stack.api_url, timeout=10) as http:
        accepted = http.post("/api/generate-bundles", json=PREFS)
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        assert set(body) == {"sessionId", "status", "pollUrl"}
        sid = body["sessionId"]
        assert SESSION_ID.fullmatch(sid)
        assert body["status"] == "queued"
        assert body["pollUrl"] == f"/api/session/{sid}"

        polled = http.get(body["pollUrl"])
        assert polled.status_code == 200, polled.text
        session = polled.json()
        for key in ("sessionId", "status", "preferences", "summaries", "bundles", "error"):
            assert key in session
        for key in ("progress", "createdAt", "updatedAt", "startedAt", "completedAt"):
            assert key in session
        assert not any("_" in key for key in session), "keys must be camelCase"
        assert session["sessionId"] == sid
        assert session["status"] in ("queued", "running", "completed")
        assert session["preferences"]["interests"] == PREFS["interests"]
        assert session["preferences"]["tripLengthDays"] == 3
        assert session["progress"]["total"] == 2

    final = wait_final(stack.api_url, sid)
    assert final["status"] == "completed", final
    assert final["error"] is None
    assert [s["index"] for s in final["summaries"]] == [0, 1]
    assert [b["index"] for b in final["bundles"]] == [0, 1]
    assert final["progress"] == {"done": 2, "total": 2}
    assert final["completedAt"] is not None


@pytest.mark.parametrize(
    ("change", "field", "echo"),
    [
        ({"budget": "lots-of-money"}, "budget", "lots-of-money"),
        ({"travellers": "two-people"}, "travellers", "two-people"),
        ({"interests": "hiking-and-tapas"}, "interests", "hiking-and-tapas"),
        ({"surprise": "unexpected-value"}, "surprise", "unexpected-value"),
        ({"currency": "euros-please"}, "currency", "euros-please"),
    ],
)
def test_wrong_fields_are_422_with_problems_and_no_echo(
    stack: LocalStack, change: dict[str, Any], field: str, echo: str
) -> None:
    response = httpx.post(f"{stack.api_url}/api/generate-bundles", json={**PREFS, **change})
    problems = problems_of(response)
    assert field in [p["field"] for p in problems], problems
    assert echo not in response.text


@pytest.mark.parametrize("missing", ["interests", "budget"])
def test_missing_required_field_is_422(stack: LocalStack, missing: str) -> None:
    body = {k: v for k, v in PREFS.items() if k != missing}
    problems = problems_of(httpx.post(f"{stack.api_url}/api/generate-bundles", json=body))
    assert {"field": missing, "message": "Field required"} in problems


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"interests": ["food"], "budget": ', "application/json"),  # invalid JSON text
        (json.dumps(PREFS).encode(), "text/plain"),  # not declared as JSON
        (b"interests=food&budget=100", "application/x-www-form-urlencoded"),
        (b"", "application/json"),  # empty body
        (b"", None),  # empty, no content type at all
    ],
    ids=["invalid-json", "text-plain", "form", "empty-json", "empty-untyped"],
)
def test_unusable_bodies_are_422_json(
    stack: LocalStack, content: bytes, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(f"{stack.api_url}/api/generate-bundles", content=content, headers=headers)
    problems = problems_of(response)
    assert [p["field"] for p in problems] == ["body"], problems


def test_body_over_64_kib_with_content_length_is_413(stack: LocalStack) -> None:
    big = json.dumps({**PREFS, "notes": "x" * (MAX_API_BODY + 10)}).encode()
    response = httpx.post(
        f"{stack.api_url}/api/generate-bundles",
        content=big,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert response.request.headers["content-length"] == str(len(big))
    assert response.status_code == 413, response.text
    assert response.json() == {"error": "Request body too large", "limit": MAX_API_BODY}


def test_oversized_chunked_body_without_content_length_is_413(stack: LocalStack) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(8):  # 80 KiB in all, no length announced
            sent += 10 * 1024
            yield b" " * (10 * 1024)

    response = httpx.post(
        f"{stack.api_url}/api/generate-bundles",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert sent > MAX_API_BODY
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "Request body too large"


def test_body_just_under_the_limit_is_read(stack: LocalStack) -> None:
    """The limit is a limit, not a blanket refusal: 60 KiB of JSON reaches validation."""
    body = json.dumps({**PREFS, "notes": "x" * (60 * 1024)}).encode()
    assert len(body) < MAX_API_BODY
    response = httpx.post(
        f"{stack.api_url}/api/generate-bundles",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert problems_of(response) == [
        {"field": "notes", "message": "String should have at most 1000 characters"}
    ]


@pytest.mark.parametrize(
    "raw_id",
    ["*", "a" * 5000, "A" * 32, "0123456789ABCDEF0123456789abcdef", "tripkit:session:*", "0" * 31],
    ids=["star", "5000-chars", "upper-hex", "mixed-case", "key-pattern", "short"],
)
def test_malformed_session_ids_are_400(stack: LocalStack, raw_id: str) -> None:
    response = httpx.get(f"{stack.api_url}/api/session/{raw_id}")
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "Malformed session id"
    assert "32 lowercase hex" in body["hint"]
    assert raw_id[:40] not in response.text  # never echoed


@pytest.mark.parametrize("path", ["/api/session/..%2F..%2Fetc", "/api/session/", "/api/nope"])
def test_paths_that_do_not_route_are_404_json(stack: LocalStack, path: str) -> None:
    response = httpx.get(f"{stack.api_url}{path}")
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "error" in response.json()


def test_wrong_method_is_405_json(stack: LocalStack) -> None:
    response = httpx.delete(f"{stack.api_url}/api/session/{'0' * 32}")
    assert response.status_code == 405
    assert "error" in response.json()
    assert "GET" in response.headers["allow"]


def test_unknown_well_formed_id_is_404(stack: LocalStack) -> None:
    response = httpx.get(f"{stack.api_url}/api/session/{secrets.token_hex(16)}")
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "Session not found"
    assert "expire" in body["hint"]


def test_healthz_reports_redis_and_inngest(stack: LocalStack) -> None:
    response = httpx.get(f"{stack.api_url}/healthz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert body["redis"]["ok"] is True
    assert body["redis"]["transport"] == "rest"
    assert body["inngest"] == {"ok": True, "url": stack.inngest_url}


# ------------------------------------------------------------------ Redis down


@pytest.fixture(scope="module")
def redis_down_app(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app configured with a Redis address where nothing listens."""
    settings = load_settings(
        Path(tmp_path_factory.mktemp("redis-down")),
        redis_url=SecretStr(f"redis://127.0.0.1:{free_port()}/0"),
        redis_transport="resp",
        inngest_base_url=stack.inngest_url,
        inngest_signing_key=None,
        redis_timeout=1,
    )
    with ServerThread(create_app(settings)) as served:
        yield served.url


def assert_store_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "Session store unavailable"
    assert "paused" in body["hint"]
    assert "REDIS_URL" in body["hint"] or "credentials" in body["hint"]


def test_redis_down_generate_is_503(redis_down_app: str) -> None:
    response = httpx.post(f"{redis_down_app}/api/generate-bundles", json=PREFS, timeout=10)
    assert_store_unavailable(response)


def test_redis_down_poll_is_503(redis_down_app: str) -> None:
    response = httpx.get(f"{redis_down_app}/api/session/{secrets.token_hex(16)}", timeout=10)
    assert_store_unavailable(response)


def test_redis_down_bad_input_is_still_4xx(redis_down_app: str) -> None:
    """Validation happens before Redis is touched: the caller's mistake is still theirs."""
    assert httpx.get(f"{redis_down_app}/api/session/*").status_code == 400
    response = httpx.post(f"{redis_down_app}/api/generate-bundles", json={"budget": 1})
    assert response.status_code == 422


def test_redis_down_healthz_is_503_degraded(redis_down_app: str, stack: LocalStack) -> None:
    response = httpx.get(f"{redis_down_app}/healthz", timeout=10)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "degraded"
    assert body["redis"]["ok"] is False
    assert body["redis"]["transport"] == "resp"
    assert body["redis"]["error"] == "RedisUnavailable"  # the host stays in the app's log
    assert "127.0.0.1" not in response.text.replace(body["inngest"]["url"], "")
    assert body["inngest"]["ok"] is True


def test_signed_app_without_event_key_fails_the_session_clearly(
    stack: LocalStack, redis_url: str, tmp_path: Path
) -> None:
    """Production mode with a signing key but no INNGEST_EVENT_KEY: the SDK cannot send
    the event, so the request is a 503 naming the variable and no session stays queued."""
    prefix = f"api{secrets.token_hex(5)}"
    settings = load_settings(
        tmp_path,
        redis_url=SecretStr(redis_url),
        redis_transport="resp",
        key_prefix=prefix,
        inngest_base_url=stack.inngest_url,
        inngest_signing_key=SecretStr(SIGNING_KEY),
        inngest_event_key=None,
    )
    with ServerThread(create_app(settings)) as served:
        response = httpx.post(f"{served.url}/api/generate-bundles", json=PREFS, timeout=10)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "Could not start the generation"
    assert "INNGEST_EVENT_KEY" in body["hint"]
    client = redis.Redis.from_url(redis_url)
    try:
        docs = [json.loads(client.get(k) or b"{}") for k in client.scan_iter(f"{prefix}:*")]
    finally:
        client.close()
    assert [d["status"] for d in docs] == ["failed"], docs
    assert docs[0]["error"].startswith("Could not queue the generation")


# --------------------------------------------------------------- production mode


@pytest.fixture(scope="module")
def signed_stack() -> Iterator[LocalStack]:
    # In production mode the SDK will not send events without an event key (the stack's
    # executor accepts any key), so the app gets one, as it would in production.
    config = StackConfig(
        chunk_delay=0,
        backoff_ms=[50, 100, 200],
        signing_key=SIGNING_KEY,
    )
    with LocalStack(config) as running:
        yield running


def call_body(session_id: str | None = None) -> bytes:
    """A well-formed discovery call, as the executor sends it (for an unknown session)."""
    sid = session_id or secrets.token_hex(16)
    event = {
        "name": EVENT_NAME,
        "data": {"sessionId": sid, "preferences": PREFS},
        "id": sid,
        "ts": int(time.time() * 1000),
    }
    body = {
        "event": event,
        "events": [event],
        "steps": {},
        "use_api": False,
        "ctx": {
            "run_id": "01" + secrets.token_hex(12).upper(),
            "attempt": 0,
            "max_attempts": 5,
            "disable_immediate_execution": False,
            "use_api": False,
            "stack": {"stack": [], "current": 0},
        },
    }
    return json.dumps(body).encode()


def call(stack: LocalStack, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"content-type": "application/json", "x-inngest-server-kind": "cloud"}
    if signature is not None:
        headers["x-inngest-signature"] = signature
    return httpx.post(
        f"{stack.worker_url}/api/inngest",
        params={"fnId": FUNCTION_SLUG, "stepId": "step"},
        content=body,
        headers=headers,
        timeout=30,
    )


def assert_refused(response: httpx.Response, *words: str) -> str:
    """A 401 from our Guard (the SDK never saw the call); returns the hint."""
    assert response.status_code == 401, response.text
    assert "x-inngest-sdk" not in response.headers
    body = response.json()
    assert body["error"] == "Invalid signature"
    hint: str = body["hint"]
    for word in words:
        assert word in hint, hint
    assert SIGNING_KEY.removeprefix("signkey-test-") not in response.text
    return hint


def test_signed_generation_completes(signed_stack: LocalStack) -> None:
    accepted = httpx.post(f"{signed_stack.api_url}/api/generate-bundles", json=PREFS, timeout=10)
    assert accepted.status_code == 202, accepted.text
    final = wait_final(signed_stack.api_url, accepted.json()["sessionId"])
    assert final["status"] == "completed", final
    assert len(final["bundles"]) == 2


def test_unsigned_call_is_401(signed_stack: LocalStack) -> None:
    assert_refused(call(signed_stack, call_body(), None), "no X-Inngest-Signature")


def test_call_signed_with_another_key_is_401(signed_stack: LocalStack) -> None:
    body = call_body()
    assert_refused(call(signed_stack, body, signing.sign(body, WRONG_KEY)), "does not match")


def test_tampered_body_is_401(signed_stack: LocalStack) -> None:
    signed, sent = call_body(), call_body()
    assert signed != sent
    assert_refused(call(signed_stack, sent, signing.sign(signed, SIGNING_KEY)), "does not match")


def test_stale_signature_is_401_replay_window(signed_stack: LocalStack) -> None:
    body = call_body()
    t = int(time.time()) - 400
    header = signing.sign(body, SIGNING_KEY, t)
    # The signature itself is right: without a window (inngest 0.5.x alone) it passes.
    assert signing.verify(header, body, SIGNING_KEY, max_age=None) == SIGNING_KEY
    hint = assert_refused(call(signed_stack, body, header), "s old", "300 s")
    assert re.search(r"\b4\d\d s old", hint), hint


def test_future_signature_is_401(signed_stack: LocalStack) -> None:
    body = call_body()
    header = signing.sign(body, SIGNING_KEY, int(time.time()) + 400)
    assert_refused(call(signed_stack, body, header), "at most 300 s")


def test_malformed_signature_header_is_401(signed_stack: LocalStack) -> None:
    assert_refused(call(signed_stack, call_body(), "s=abc"), "malformed")


def test_fresh_correct_signature_reaches_the_sdk(signed_stack: LocalStack) -> None:
    body = call_body()  # an unknown session: the plan step fails, nothing is written
    response = call(signed_stack, body, signing.sign(body, SIGNING_KEY))
    assert response.status_code != 401, response.text
    assert "x-inngest-sdk" in response.headers
    assert response.status_code in (200, 206, 500), response.text
    # The SDK signs its answer with the same key, over the raw bytes.
    signing.verify(
        response.headers["x-inngest-signature"],
        response.content,
        SIGNING_KEY,
        canonicalize=False,
    )
