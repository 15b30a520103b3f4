"""Run controls through the HTTP API on the offline stack: cancel, and Idempotency-Key.

Real processes: the app (`uvicorn tripkit.api:app`), the executor driving the real
inngest SDK, Redis behind the REST gateway.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from helpers import run_cli, wait_final

from tripkit import keys
from tripkit.api_client import ApiClient, ApiError
from tripkit.constants import CANCEL_EVENT_NAME, DEFAULT_KEY_PREFIX, FUNCTION_SLUG
from tripkit.devstack.stack import LocalStack
from tripkit.errors import SessionNotFound
from tripkit.models import Preferences, Status
from tripkit.store import SessionStore
from tripkit.transport.rest import RestTransport

PREFS: dict[str, Any] = {
    "interests": ["food", "museums"],
    "tripLengthDays": 3,
    "budget": 2400,
    "bundleCount": 2,
}


def generate(
    stack: LocalStack, key: str | None = None, prefs: dict[str, Any] = PREFS
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return httpx.post(
        f"{stack.api_url}/api/generate-bundles", json=prefs, headers=headers, timeout=30
    )


def cancel(stack: LocalStack, session_id: str) -> httpx.Response:
    return httpx.post(f"{stack.api_url}/api/session/{session_id}/cancel", timeout=30)


def runs_of(stack: LocalStack, session_id: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{stack.inngest_url}/v1/events/{session_id}/runs", timeout=5).json()
    runs: list[dict[str, Any]] = body["data"]
    return runs


def run_ended(stack: LocalStack, session_id: str) -> bool:
    runs = runs_of(stack, session_id)
    return bool(runs) and all(r["status"] != "Running" for r in runs)


def session_keys(stack: LocalStack) -> int:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        return sum(1 for _ in client.scan_iter(match=f"{DEFAULT_KEY_PREFIX}:session:*"))
    finally:
        client.close()


async def _queued_session(stack: LocalStack) -> str:
    """A session as the API creates it, whose run has not started (no event sent): a
    generation waiting in Inngest's queue, as far as the session can tell."""
    transport = RestTransport(stack.rest_url, stack.rest_token)
    async with SessionStore(transport, prefix=DEFAULT_KEY_PREFIX) as store:
        session = await store.create(Preferences.model_validate(PREFS))
    return session.session_id


def queued_session(stack: LocalStack) -> str:
    return asyncio.run(_queued_session(stack))


# ------------------------------------------------------------------------ cancel


def test_cancel_a_queued_session_is_202_then_200(stack: LocalStack) -> None:
    session_id = queued_session(stack)
    first = cancel(stack, session_id)
    assert first.status_code == 202, first.text
    body = first.json()
    assert body["sessionId"] == session_id and body["status"] == "cancelled"
    assert body["error"] == "Generation cancelled on request." and body["completedAt"]
    assert body["bundles"] == [] and body["summaries"] == []
    assert httpx.get(f"{stack.api_url}/api/session/{session_id}").json() == body

    again = cancel(stack, session_id)
    assert again.status_code == 200 and again.json() == body
    # The cancel event went to Inngest, once: a repeated cancel sends nothing more.
    events = httpx.get(f"{stack.inngest_url}/v1/events", timeout=5).json()["data"]
    sent = [e for e in events if e.get("data") == {"sessionId": session_id}]
    assert [e["name"] for e in sent] == [CANCEL_EVENT_NAME]


def test_cancel_a_finished_generation_is_409_with_its_status(stack: LocalStack) -> None:
    session_id = generate(stack).json()["sessionId"]
    assert wait_final(stack.api_url, session_id)["status"] == "completed"
    response = cancel(stack, session_id)
    assert response.status_code == 409
    assert response.json() == {
        "error": "Session already completed",
        "hint": "A finished generation cannot be cancelled.",
        "status": "completed",
    }
    assert httpx.get(f"{stack.api_url}/api/session/{session_id}").json()["status"] == "completed"


def test_cancel_an_unknown_session_is_404_and_a_malformed_id_400(stack: LocalStack) -> None:
    unknown = cancel(stack, secrets.token_hex(16))
    assert unknown.status_code == 404 and unknown.json()["error"] == "Session not found"
    malformed = cancel(stack, "not-a-session")
    assert malformed.status_code == 400 and malformed.json()["error"] == "Malformed session id"


async def test_the_python_client_cancels(stack: LocalStack) -> None:
    session_id = await _queued_session(stack)
    async with ApiClient(stack.api_url) as api:
        cancelled = await api.cancel(session_id)
        assert cancelled.status is Status.CANCELLED and cancelled.session_id == session_id
        assert (await api.cancel(session_id)) == cancelled
        with pytest.raises(SessionNotFound):
            await api.cancel(secrets.token_hex(16))
    done = generate(stack).json()["sessionId"]
    wait_final(stack.api_url, done)
    async with ApiClient(stack.api_url) as api:
        with pytest.raises(ApiError) as caught:
            await api.cancel(done)
    assert caught.value.status == 409 and "already completed" in str(caught.value)


def test_the_cli_cancels_through_the_api(stack: LocalStack, tmp_path: Path) -> None:
    session_id = queued_session(stack)
    done = run_cli("cancel", session_id, cwd=tmp_path, TRIPKIT_API_URL=stack.api_url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "cancelled"

    unknown = run_cli("cancel", secrets.token_hex(16), "--api-url", stack.api_url, cwd=tmp_path)
    assert unknown.returncode == 2 and "not found" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    nowhere = run_cli("cancel", session_id, cwd=tmp_path)
    assert nowhere.returncode == 2 and "--api-url" in nowhere.stderr


# ---------------------------------------------------------------- Idempotency-Key


def test_the_same_key_returns_the_same_session_and_starts_one_run(stack: LocalStack) -> None:
    key = str(uuid.uuid4())
    first = generate(stack, key)
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    session_id = first.json()["sessionId"]
    wait_final(stack.api_url, session_id)

    again = generate(stack, key, dict(reversed(list(PREFS.items()))))  # same body, reordered
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == {
        "sessionId": session_id,
        "status": "completed",
        "pollUrl": f"/api/session/{session_id}",
    }
    assert [r["function_id"] for r in runs_of(stack, session_id)] == [FUNCTION_SLUG]


def test_the_same_key_with_other_preferences_is_422(stack: LocalStack) -> None:
    key = str(uuid.uuid4())
    session_id = generate(stack, key).json()["sessionId"]
    other = generate(stack, key, PREFS | {"budget": 900})
    assert other.status_code == 422
    body = other.json()
    assert body["error"] == "Idempotency-Key reused with other preferences"
    assert session_id in body["hint"] and "fresh UUID" in body["hint"]


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
def test_a_malformed_key_is_400(stack: LocalStack, key: str) -> None:
    response = httpx.post(
        f"{stack.api_url}/api/generate-bundles",
        json=PREFS,
        headers=[(b"Idempotency-Key", key.encode("utf-8"))],
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "Malformed Idempotency-Key header."


def test_a_double_click_burst_makes_one_session_and_one_run(stack: LocalStack) -> None:
    key = str(uuid.uuid4())
    before = session_keys(stack)
    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda _: generate(stack, key), range(10)))
    assert [r.status_code for r in responses] == [202] * 10
    assert len({r.json()["sessionId"] for r in responses}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
    session_id = responses[0].json()["sessionId"]
    assert session_keys(stack) == before + 1
    assert wait_final(stack.api_url, session_id)["status"] == "completed"
    assert len(runs_of(stack, session_id)) == 1
    client = redis.Redis.from_url(stack.redis_url)
    try:
        assert client.exists(keys.idempotency_key(DEFAULT_KEY_PREFIX, key)) == 1
    finally:
        client.close()


# ------------------------------------------------------------------------ schema


def test_the_schema_declares_every_status_of_the_new_routes_with_its_body(
    stack: LocalStack,
) -> None:
    schema = httpx.get(f"{stack.api_url}/openapi.json", timeout=10).json()
    error = "#/components/schemas/ErrorBody"

    def ref(response: dict[str, Any]) -> str:
        return str(response["content"]["application/json"]["schema"]["$ref"])

    cancel_op = schema["paths"]["/api/session/{session_id}/cancel"]["post"]["responses"]
    assert {"200", "202", "400", "404", "409", "413", "503"} <= set(cancel_op)
    assert ref(cancel_op["200"]) == ref(cancel_op["202"]) == "#/components/schemas/Session"
    for status in ("400", "404", "409", "413", "503"):
        assert ref(cancel_op[status]) == error, status

    generate = schema["paths"]["/api/generate-bundles"]["post"]
    assert ref(generate["responses"]["202"]) == "#/components/schemas/Accepted"
    for status in ("400", "413", "422", "503"):
        assert ref(generate["responses"][status]) == error, status
    (header,) = [p for p in generate["parameters"] if p["in"] == "header"]
    assert header["name"] == "idempotency-key" and not header.get("required")
    assert "cancelled" in schema["components"]["schemas"]["Status"]["enum"]
