"""The OpenAPI schema tells the truth: a schema-driven fuzzer (schemathesis) finds no
status, header or body that ``/openapi.json`` does not declare, and no server error.

The app under test is a real uvicorn serving ``create_app`` (the API role) on the real
Redis, sending its events to a real executor with no app synced: like Inngest with no
function for the event, it accepts them and starts nothing, so hundreds of generated
requests cost no generations.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from helpers import ServerThread, free_port
from hypothesis import HealthCheck, given, settings
from pydantic import SecretStr
from schemathesis import APIOperation, CheckFunction
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tripkit.api import create_app
from tripkit.config import load_settings
from tripkit.devstack.executor.config import ExecutorConfig
from tripkit.devstack.executor.routes import create_app as create_executor


@pytest.fixture(scope="module")
def api_url(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    with ServerThread(create_executor(ExecutorConfig(port=port)), port) as executor:
        app_settings = load_settings(
            Path(tmp_path_factory.mktemp("schema")),
            redis_url=SecretStr(redis_url),
            redis_transport="resp",
            inngest_base_url=executor.url,
            inngest_signing_key=None,
            role="api",
        )
        with ServerThread(create_app(app_settings)) as app:
            yield app.url


#: Preferences has rules across fields (dates or a length, an end after the start) that
#: JSON Schema cannot state, so schema-valid bodies may get the 422 the schema declares.
UNSTATED: list[CheckFunction] = [positive_data_acceptance]


def _ok(result: Any) -> APIOperation[Any, Any, Any, Any]:
    operation: APIOperation[Any, Any, Any, Any] = result.ok()  # raises on an invalid schema
    return operation


#: Every route of the API's schema: the public ones, and the health probe.
ROUTES = [
    "/api/generate-bundles",
    "/api/session/{session_id}",
    "/api/session/{session_id}/events",
    "/api/session/{session_id}/cancel",
    "/healthz",
]


@pytest.mark.parametrize("route", ROUTES)
def test_every_answer_is_declared(api_url: str, route: str) -> None:
    """Generated requests, valid and not, to each operation of the route: every response's
    status, content type, headers and body must be what the schema declares for it."""
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    operations = [op for op in map(_ok, schema.get_all_operations()) if op.path == route]
    assert operations, f"{route} is not in the schema"
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=60,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(base_url=api_url, timeout=10, excluded_checks=UNSTATED)

        call()


def test_schema_leaves_out_the_inngest_protocol_route(api_url: str) -> None:
    paths = httpx.get(f"{api_url}/openapi.json").json()["paths"]
    assert "/api/inngest" not in paths
    assert set(paths) == set(ROUTES)


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/api/session/not-an-id", {}, 400),
        ("GET", "/api/session/" + "0" * 32, {}, 404),
        ("GET", "/api/session/not-an-id/events", {}, 400),
        ("GET", "/api/session/" + "0" * 32 + "/events", {}, 404),
        ("GET", "/api/session/" + "0" * 32 + "/events", {"headers": {"Last-Event-ID": "x"}}, 400),
        ("POST", "/api/session/not-an-id/cancel", {}, 400),
        ("POST", "/api/session/" + "0" * 32 + "/cancel", {}, 404),
        ("POST", "/api/generate-bundles", {"content": b"{not json"}, 422),
        ("POST", "/api/generate-bundles", {"content": b"\xff{}", "headers": JSON}, 400),
        ("POST", "/api/generate-bundles", {"json": {"budget": -1}}, 422),
        ("POST", "/api/generate-bundles", {"content": b"x" * (70 * 1024)}, 413),
    ],
)
def test_known_errors_are_declared_with_the_error_body(
    api_url: str, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    """Each error the fuzzer may not stumble on, checked by hand: its status is declared
    for the route, with the error body model, and the body matches it."""
    response = httpx.request(method, f"{api_url}{path}", timeout=10, **kwargs)
    assert response.status_code == status, response.text
    spec = httpx.get(f"{api_url}/openapi.json").json()
    route = path
    if path.startswith("/api/session/"):
        tail = path.removeprefix("/api/session/").partition("/")[2]
        route = "/api/session/{session_id}" + (f"/{tail}" if tail else "")
    declared = spec["paths"][route][method.lower()]["responses"]
    assert str(status) in declared
    ref = declared[str(status)]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/ErrorBody")
    assert set(response.json()) <= {"error", "hint", "problems", "limit"}
    assert response.json()["error"]


def test_unchanged_session_answers_304_to_its_etag(api_url: str) -> None:
    with httpx.Client(base_url=api_url, timeout=10) as http:
        accepted = http.post(
            "/api/generate-bundles",
            json={"interests": ["food"], "tripLengthDays": 2, "budget": 900, "bundleCount": 1},
        )
        assert accepted.status_code == 202, accepted.text
        poll_url = accepted.json()["pollUrl"]
        first = http.get(poll_url)
        assert first.status_code == 200
        etag = first.headers["etag"]
        again = http.get(poll_url, headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        other = http.get(poll_url, headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200
        assert other.json() == first.json()
