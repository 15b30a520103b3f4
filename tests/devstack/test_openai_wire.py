"""The model server's request checks, through the real ``openai`` client over real HTTP.

A parameter the server would not honour is a 400 in OpenAI's error shape, naming it;
the ones it honours change the answer the way the API's do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tripkit.devstack.model_server import BackgroundServer, ModelServerConfig
from tripkit.devstack.openai_wire import UNSUPPORTED

KEY = "sk-devstack-wire-0123456789abcdef"
MODEL = "gpt-4o-mini"
TASK = {
    "task": "bundle",
    "index": 0,
    "avoid": [],
    "preferences": {
        "interests": ["food"],
        "startDate": "2026-05-01",
        "endDate": "2026-05-04",
        "budget": 2000,
        "currency": "EUR",
        "travellers": 1,
        "pace": "relaxed",
    },
    "count": 2,
}
MESSAGES: list[Any] = [{"role": "user", "content": f"```json\n{json.dumps(TASK)}\n```"}]


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer(ModelServerConfig()) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0) as real:
        yield real


def refused(client: openai.OpenAI, **params: Any) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, **params)
    error = caught.value
    assert error.status_code == 400
    body = error.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
            "tools",
        ),
        ({"tool_choice": "none"}, "tool_choice"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"store": False}, "store"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_parameters_it_does_not_honour_are_refused(
    client: openai.OpenAI, params: dict[str, Any], param: str
) -> None:
    error = refused(client, **params)
    assert error.param == param
    assert error.code == "unsupported_parameter"
    assert f"'{param}' is not supported" in error.message
    assert UNSUPPORTED[param] in error.message  # and why


@pytest.mark.parametrize(
    ("params", "param"),
    [({"n": 2}, "n"), ({"logprobs": True}, "logprobs")],
)
def test_values_it_cannot_give_are_refused(
    client: openai.OpenAI, params: dict[str, Any], param: str
) -> None:
    error = refused(client, **params)
    assert (error.param, error.code) == (param, "unsupported_value")


def test_unknown_parameters_are_refused(client: openai.OpenAI) -> None:
    error = refused(client, extra_body={"frobnicate": 1})
    assert (error.param, error.code) == ("frobnicate", "unknown_parameter")
    assert isinstance(error.body, dict)
    assert error.body["message"] == "Unrecognized request argument supplied: frobnicate"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "tool", "content": "42", "tool_call_id": "call_1"}, "messages[1].role"),
        (
            {"role": "assistant", "content": None, "tool_calls": []},
            "messages[1].tool_calls",
        ),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
            "messages[1]",
        ),
    ],
    ids=["tool-role", "tool-calls", "image-part"],
)
def test_messages_it_cannot_read_are_refused(
    client: openai.OpenAI, message: dict[str, Any], param: str
) -> None:
    messages: list[Any] = [*MESSAGES, message]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert caught.value.param == param


def test_stream_options_are_checked(client: openai.OpenAI) -> None:
    alone = refused(client, stream_options={"include_usage": True})
    assert alone.param == "stream_options"
    padded = refused(client, stream=True, stream_options={"include_obfuscation": True})
    assert padded.param == "stream_options.include_obfuscation"
    unknown = refused(client, stream=True, stream_options={"include_everything": True})
    assert unknown.param == "stream_options.include_everything"


def test_out_of_range_values_are_refused(client: openai.OpenAI) -> None:
    assert refused(client, temperature=3).param == "temperature"
    assert refused(client, max_completion_tokens=0).param == "max_completion_tokens"
    assert refused(client, max_tokens=5, max_completion_tokens=5).param == "max_tokens"
    assert refused(client, stop=["a", "b", "c", "d", "e"]).param == "stop"


def test_what_it_honours_is_accepted(client: openai.OpenAI) -> None:
    """What tripkit sends, plus the sampling knobs and caller labels, with null as unset."""
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    knobs = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "developer", "content": [{"type": "text", "text": "Plan."}]}, *MESSAGES],
        n=1,
        logprobs=False,
        temperature=0.2,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        seed=7,
        user="tester",
        safety_identifier="hash-of-user",
        extra_body={"response_format": None, "tools": None},
    )
    assert knobs.choices[0].message.content == whole.choices[0].message.content
    assert knobs.choices[0].finish_reason == "stop"


def test_max_completion_tokens_cuts_the_reply(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    full = whole.choices[0].message.content or ""
    cut = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_completion_tokens=5)
    assert cut.choices[0].finish_reason == "length"
    assert cut.choices[0].message.content == full[:20]
    assert cut.usage is not None and cut.usage.completion_tokens == 5
    streamed = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(streamed)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full[:12]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_stop_sequences_end_the_reply(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    text = full.choices[0].message.content or ""
    assert text.startswith('{"summary"')  # a trip answer, not the fixed refusal
    # The earliest of the sequences ends the reply.
    stops = ["\n", '"bundle"']
    first = min(text.index(s) for s in stops)
    assert first > 0
    stopped = client.chat.completions.create(model=MODEL, messages=MESSAGES, stop=stops)
    assert stopped.choices[0].message.content == text[:first]
    assert stopped.choices[0].finish_reason == "stop"


def test_a_non_object_body_is_refused(server: BackgroundServer) -> None:
    response = httpx.post(
        f"{server.base_url}/chat/completions",
        headers={"authorization": f"Bearer {KEY}"},
        json=["model", MODEL],
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
