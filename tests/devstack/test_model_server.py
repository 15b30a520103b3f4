"""The offline model server, over real HTTP, driven by the real ``openai`` client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tripkit.devstack.model_server import DEFAULT_MODELS, BackgroundServer, ModelServerConfig
from tripkit.models import Bundle, Preferences, Summary

KEY = "sk-devstack-test-0123456789abcdef"
MODEL = "gpt-4o-mini"
CHUNK = 5
PREFS: dict[str, Any] = {
    "interests": ["food", "history"],
    "startDate": "2026-05-01",
    "endDate": "2026-05-06",
    "budget": 3000,
    "currency": "USD",
    "travellers": 2,
    "pace": "balanced",
}


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer(ModelServerConfig(chunk_size=CHUNK)) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url.removesuffix("/v1")) as plain:
        yield plain


@pytest.fixture(scope="module")
def sdk(server: BackgroundServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0) as real:
        yield real


@pytest.fixture
def control(http: httpx.Client) -> Iterator[httpx.Client]:
    """Plain HTTP to the server root; every test starts with no faults and zero stats."""
    http.post("/_control/reset").raise_for_status()
    yield http
    http.post("/_control/reset")


@pytest.fixture
def client(sdk: openai.OpenAI, control: httpx.Client) -> openai.OpenAI:
    """The real client without retries, so each fault shows."""
    return sdk


def messages(task: dict[str, Any] | str) -> list[Any]:
    block = task if isinstance(task, str) else json.dumps(task)
    return [
        {"role": "system", "content": "You are a travel planner. Answer with JSON only."},
        {"role": "user", "content": f"Do this task.\n```json\n{block}\n```"},
    ]


def bundle_task(index: int = 1, avoid: list[str] | None = None, **prefs: Any) -> dict[str, Any]:
    return {
        "task": "bundle",
        "preferences": {**PREFS, **prefs},
        "index": index,
        "count": 4,
        "avoid": avoid or [],
    }


def ask(client: openai.OpenAI, task: dict[str, Any] | str) -> str:
    reply = client.chat.completions.create(model=MODEL, messages=messages(task))
    return reply.choices[0].message.content or ""


def destinations(client: openai.OpenAI, **prefs: Any) -> list[str]:
    """Four bundles asked in turn, each avoiding the ones before, as the worker asks."""
    taken: list[str] = []
    for index in range(4):
        line = ask(client, bundle_task(index, taken, **prefs)).split("\n")[1]
        taken.append(Bundle.model_validate(json.loads(line)["bundle"]).destination)
    return taken


def stream(client: openai.OpenAI, task: dict[str, Any], *, usage: bool = True) -> list[Any]:
    chunks = client.chat.completions.create(
        model=MODEL,
        messages=messages(task),
        stream=True,
        stream_options={"include_usage": True} if usage else openai.omit,
    )
    return list(chunks)


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def add_fault(control: httpx.Client, **fault: Any) -> None:
    control.post("/_control/faults", json=fault).raise_for_status()


# --- the prompt contract ------------------------------------------------------------------


def test_bundles_asked_in_turn_are_distinct_and_deterministic(client: openai.OpenAI) -> None:
    first = destinations(client)
    assert len(set(first)) == 4
    assert destinations(client) == first
    outdoors = destinations(client, interests=["hiking", "skiing"])
    assert set(outdoors).isdisjoint(first)
    assert "Zermatt" in outdoors


def test_bundle_streams_summary_then_bundle(client: openai.OpenAI) -> None:
    chunks = stream(client, bundle_task(index=1, avoid=["Rome"]))
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 50
    assert max(len(p) for p in pieces) <= CHUNK
    assert chunks[0].choices[0].delta.role == "assistant"

    summary_line, bundle_line = text_of(chunks).split("\n")
    summary = Summary.model_validate(json.loads(summary_line)["summary"])
    bundle = Bundle.model_validate(json.loads(bundle_line)["bundle"])
    days = Preferences.model_validate(PREFS).days
    assert days == 6
    assert summary.index == bundle.index == 1
    assert summary.destination == bundle.destination != "Rome"
    assert summary.title == bundle.title
    assert 2 <= summary.text.count(". ") + 1 <= 4
    assert bundle.country
    assert bundle.nights == days - 1
    assert [d.day for d in bundle.itinerary] == list(range(1, days + 1))
    assert all(2 <= len(d.activities) <= 4 for d in bundle.itinerary)
    assert 3 <= len(bundle.highlights) <= 5
    assert bundle.currency == "USD"
    assert 0 < bundle.estimated_cost <= PREFS["budget"]


def test_usage_chunk_comes_last_when_asked(client: openai.OpenAI) -> None:
    chunks = stream(client, bundle_task())
    *content, finish, last = chunks
    assert finish.choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in [*content, finish])
    assert last.choices == []
    assert last.usage is not None
    usage = last.usage
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens == pytest.approx(len(text_of(chunks)) / 4, abs=1)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert stream(client, bundle_task())[-1].usage == usage  # deterministic


def test_no_usage_chunk_unless_asked(client: openai.OpenAI) -> None:
    chunks = stream(client, bundle_task(), usage=False)
    assert all(c.choices and c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_async_client_streams_the_same_answer(
    server: BackgroundServer, client: openai.OpenAI
) -> None:
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY) as aclient:
        chunks = await aclient.chat.completions.create(
            model="gpt-5.4-nano",
            messages=messages(bundle_task()),
            stream=True,
            stream_options={"include_usage": True},
        )
        parts = [c.choices[0].delta.content or "" async for c in chunks if c.choices]
    assert "".join(parts) == ask(client, bundle_task())


def test_non_stream_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="gpt-5-mini", messages=messages(bundle_task()))
    assert reply.object == "chat.completion"
    assert reply.model == "gpt-5-mini"
    assert reply.choices[0].finish_reason == "stop"
    lines = (reply.choices[0].message.content or "").split("\n")
    assert [list(json.loads(line)) for line in lines] == [["summary"], ["bundle"]]
    assert reply.usage is not None
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


@pytest.mark.parametrize(
    "task",
    [
        "no fence here",
        "```json\n{not json}\n```",
        '```json\n{"task": "dance", "preferences": {}}\n```',
        json.dumps({"task": "bundle", "preferences": {"interests": []}, "index": 0}),
        json.dumps({"task": "plan", "preferences": PREFS, "count": 2}),  # no planning call
    ],
)
def test_anything_else_gets_a_polite_text_reply(
    client: openai.OpenAI, control: httpx.Client, task: str
) -> None:
    if task == "no fence here":
        msgs: list[Any] = [{"role": "user", "content": task}]
    else:
        msgs = [
            {"role": "user", "content": task if task.startswith("```") else f"```json\n{task}\n```"}
        ]
    reply = client.chat.completions.create(model=MODEL, messages=msgs)
    content = reply.choices[0].message.content or ""
    assert "only plan trips" in content
    assert control.get("/_control/stats").json()["byTask"] == {"other": 1}


# --- OpenAI's errors ----------------------------------------------------------------------


def test_missing_key_is_401_in_openai_envelope(server: BackgroundServer) -> None:
    reply = httpx.post(f"{server.base_url}/chat/completions", json={"model": MODEL})
    assert reply.status_code == 401
    error = reply.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None


def test_configured_key_is_the_only_one_accepted() -> None:
    secret = "sk-only-this-one-0123456789"
    with BackgroundServer(ModelServerConfig(api_key=secret)) as srv:
        wrong_key = "sk-wrong-key-abcdefghijklmnop"
        wrong = openai.OpenAI(base_url=srv.base_url, api_key=wrong_key, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            wrong.chat.completions.create(model=MODEL, messages=messages(bundle_task()))
        assert caught.value.code == "invalid_api_key"
        assert wrong_key not in caught.value.message
        assert "sk-" in caught.value.message and "****" in caught.value.message
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        right = openai.OpenAI(base_url=srv.base_url, api_key=secret, max_retries=0)
        assert '"summary"' in ask(right, bundle_task())


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9-ultra", messages=messages(bundle_task()))
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9-ultra")


def test_models_are_listed_and_retrievable(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == list(DEFAULT_MODELS)
    assert client.models.retrieve("gpt-5.4-mini").id == "gpt-5.4-mini"


def test_invalid_bodies_are_400(client: openai.OpenAI, server: BackgroundServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[])
    assert caught.value.param == "messages"
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    url = f"{server.base_url}/chat/completions"
    missing = httpx.post(url, headers=headers, json={"model": MODEL})
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "missing_required_parameter"
    assert httpx.post(url, headers=headers, content=b"{oops").status_code == 400


# --- faults -------------------------------------------------------------------------------


def test_500_twice_then_success(client: openai.OpenAI, control: httpx.Client) -> None:
    add_fault(control, status=500, times=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            stream(client, bundle_task())
    assert text_of(stream(client, bundle_task())).startswith('{"summary"')
    stats = control.get("/_control/stats").json()
    assert stats["byOutcome"] == {"500": 2, "ok": 1}
    assert control.get("/_control/faults").json() == {"faults": []}


def test_sdk_retries_honour_retry_after(server: BackgroundServer, control: httpx.Client) -> None:
    add_fault(control, status=429, times=2, retry_after=0.01)
    patient = openai.OpenAI(base_url=server.base_url, api_key=KEY)  # default: 2 retries
    assert '"summary"' in ask(patient, bundle_task())
    assert control.get("/_control/stats").json()["byOutcome"] == {"429": 2, "ok": 1}


def test_429_is_a_rate_limit_error(client: openai.OpenAI, control: httpx.Client) -> None:
    add_fault(control, status=429, times=1, retry_after=0)
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client, bundle_task())
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "0"
    assert '"summary"' in ask(client, bundle_task())


def test_401_until_reset(client: openai.OpenAI, control: httpx.Client) -> None:
    add_fault(control, status=401, times=-1)
    for _ in range(3):
        with pytest.raises(openai.AuthenticationError):
            ask(client, bundle_task())
    control.delete("/_control/faults").raise_for_status()
    assert '"summary"' in ask(client, bundle_task())


def test_fault_only_for_one_task(client: openai.OpenAI, control: httpx.Client) -> None:
    add_fault(control, status=503, times=-1, task="bundle", index=2)
    assert '"summary"' in ask(client, bundle_task(index=0))
    assert ask(client, bundle_task(index=1)).startswith('{"summary"')
    with pytest.raises(openai.InternalServerError):
        ask(client, bundle_task(index=2))


def test_cut_stream_raises_in_the_client(client: openai.OpenAI, control: httpx.Client) -> None:
    add_fault(control, cut_after_chunks=5, times=1)
    received: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(
            model=MODEL,
            messages=messages(bundle_task()),
            stream=True,
            stream_options={"include_usage": True},
        ):
            received.append(chunk)
    assert len(received) == 1 + 5  # the role chunk, then five content chunks
    assert all(c.usage is None and c.choices[0].finish_reason is None for c in received)
    assert control.get("/_control/stats").json()["byOutcome"] == {"cut": 1}
    assert text_of(stream(client, bundle_task())).count("\n") == 1  # next call is whole


def test_cut_stream_at_eof_just_ends(client: openai.OpenAI, control: httpx.Client) -> None:
    add_fault(control, cut_after_chunks=3, cut_mode="eof", task="bundle")
    chunks = stream(client, bundle_task())
    assert len(chunks) == 1 + 3
    assert all(c.usage is None and c.choices[0].finish_reason is None for c in chunks)


def test_cut_faults_skip_non_stream_calls(client: openai.OpenAI, control: httpx.Client) -> None:
    add_fault(control, cut_after_chunks=0)
    assert '"summary"' in ask(client, bundle_task())
    assert len(control.get("/_control/faults").json()["faults"]) == 1


def test_bad_fault_is_rejected(control: httpx.Client) -> None:
    assert control.post("/_control/faults", json={"times": 2}).status_code == 422
    assert control.post("/_control/faults", json={"status": 500, "times": 0}).status_code == 422
    # the planning call is gone: a fault for it would never fire, so it is refused
    assert control.post("/_control/faults", json={"status": 500, "task": "plan"}).status_code == 422


# --- stats and pacing ---------------------------------------------------------------------


def test_stats_count_calls_and_served_bundles(client: openai.OpenAI, control: httpx.Client) -> None:
    add_fault(control, status=500, task="bundle", index=0)
    ask(client, "no task here")
    with pytest.raises(openai.InternalServerError):
        stream(client, bundle_task(index=0))
    stream(client, bundle_task(index=0))
    stream(client, bundle_task(index=1))
    stats = control.get("/_control/stats").json()
    assert stats["total"] == 4
    assert stats["byTask"] == {"other": 1, "bundle": 3}
    assert stats["byOutcome"] == {"ok": 3, "500": 1}
    assert stats["served"] == [
        {"task": "other", "index": None},
        {"task": "bundle", "index": 0},
        {"task": "bundle", "index": 1},
    ]
    control.post("/_control/reset").raise_for_status()
    assert control.get("/_control/stats").json()["total"] == 0


def test_chunk_delay_paces_the_stream() -> None:
    with BackgroundServer(ModelServerConfig(chunk_delay=0.02, chunk_size=40)) as srv:
        paced = openai.OpenAI(base_url=srv.base_url, api_key=KEY, max_retries=0)
        started = time.monotonic()
        chunks = stream(paced, {"task": "none"})
        elapsed = time.monotonic() - started
    content_chunks = len(chunks) - 3  # role, finish and usage chunks carry no text
    assert elapsed >= 0.02 * content_chunks >= 0.06


def test_cli_announces_the_base_url() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tripkit.devstack.model_server",
            "--port",
            "0",
            "--chunk-delay",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("OPENAI_BASE_URL=http://127.0.0.1:")
        base_url = line.partition("=")[2]
        assert httpx.get(f"{base_url.removesuffix('/v1')}/_control/health").json()["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
