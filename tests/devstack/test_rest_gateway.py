"""The Upstash-REST gateway, over real HTTP, in front of a real Redis."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from helpers import free_port, wait_until

from tripkit.devstack.redis_server import EmbeddedRedis
from tripkit.devstack.rest_gateway import AUTH_ERROR, BackgroundGateway
from tripkit.errors import StoreError

B64 = {"Upstash-Encoding": "base64"}


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


@pytest.fixture(scope="module")
def anon(rest_gateway: BackgroundGateway) -> Iterator[httpx.Client]:
    """A client without credentials (one per module: creating httpx clients is slow)."""
    with httpx.Client(base_url=rest_gateway.url, timeout=10) as http:
        yield http


@pytest.fixture(scope="module")
def authed(rest_gateway: BackgroundGateway) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {rest_gateway.token}"}
    with httpx.Client(base_url=rest_gateway.url, headers=headers, timeout=10) as http:
        yield http


@pytest.fixture
def client(authed: httpx.Client, flush_redis: redis.Redis) -> httpx.Client:
    """An authenticated client on a flushed database."""
    return authed


def test_single_command_set_get(client: httpx.Client) -> None:
    set_ = client.post("/", json=["SET", "k", "v", "EX", 3600])
    assert (set_.status_code, set_.json()) == (200, {"result": "OK"})
    assert client.post("/", json=["GET", "k"]).json() == {"result": "v"}
    assert client.post("/", json=["TTL", "k"]).json()["result"] > 3500
    assert client.post("/", json=["GET", "missing"]).json() == {"result": None}
    assert client.post("/", json=["INCRBYFLOAT", "f", 1.5]).json() == {"result": "1.5"}


def test_command_error_is_400_json(client: httpx.Client) -> None:
    client.post("/", json=["SET", "s", "text"])
    response = client.post("/", json=["INCR", "s"])
    assert response.status_code == 400
    assert response.json() == {"error": "ERR value is not an integer or out of range"}
    unknown = client.post("/", json=["NOSUCHCOMMAND"])
    assert unknown.status_code == 400 and unknown.json()["error"].startswith("ERR unknown command")


def test_path_style(client: httpx.Client, flush_redis: redis.Redis) -> None:
    assert client.get("/set/a%2Fb/hello%20world/EX/100").json() == {"result": "OK"}
    assert flush_redis.get("a/b") == b"hello world"
    assert client.get("/get/a%2Fb").json() == {"result": "hello world"}
    assert client.post("/set/body", content=b'{"raw": true}').json() == {"result": "OK"}
    assert flush_redis.get("body") == b'{"raw": true}'
    assert client.post("/incr/n").json() == {"result": 1}


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({}, {}),
        ({"Authorization": "Bearer wrong"}, {}),
        ({"Authorization": "Basic abc"}, {}),
        ({}, {"_token": "wrong"}),
    ],
    ids=["missing", "wrong-bearer", "not-bearer", "wrong-query"],
)
def test_bad_token_is_401(
    anon: httpx.Client, headers: dict[str, str], params: dict[str, str]
) -> None:
    response = anon.post("/", json=["PING"], headers=headers, params=params)
    assert response.status_code == 401
    assert response.json() == {"error": AUTH_ERROR}
    assert AUTH_ERROR == "WRONGPASS invalid or missing auth token"


def test_query_token_is_accepted(anon: httpx.Client, rest_gateway: BackgroundGateway) -> None:
    response = anon.post("/", json=["PING"], params={"_token": rest_gateway.token})
    assert (response.status_code, response.json()) == (200, {"result": "PONG"})


def test_pipeline_failure_in_the_middle_does_not_stop_the_others(client: httpx.Client) -> None:
    response = client.post(
        "/pipeline",
        json=[["SET", "s", "text"], ["INCR", "s"], ["INCR", "n"], ["GET", "s"], ["BLPOP", "l", 0]],
    )
    assert response.status_code == 200
    assert response.json() == [
        {"result": "OK"},
        {"error": "ERR value is not an integer or out of range"},
        {"result": 1},
        {"result": "text"},
        {"error": "ERR blocking command BLPOP is not supported over REST"},
    ]


def test_multi_exec_success(client: httpx.Client, flush_redis: redis.Redis) -> None:
    response = client.post(
        "/multi-exec", json=[["SET", "a", "1"], ["INCR", "a"], ["RPUSH", "l", "x", "y"]]
    )
    assert response.status_code == 200
    assert response.json() == [{"result": "OK"}, {"result": 2}, {"result": 2}]
    assert flush_redis.get("a") == b"2"


def test_multi_exec_queue_error_aborts_everything(
    client: httpx.Client, flush_redis: redis.Redis
) -> None:
    response = client.post(
        "/multi-exec", json=[["SET", "a", "1"], ["NOSUCHCOMMAND", "x"], ["SET", "b", "2"]]
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("EXECABORT Transaction discarded")
    assert flush_redis.exists("a", "b") == 0
    # The connection is usable afterwards (not left inside MULTI).
    assert client.post("/", json=["SET", "c", "3"]).json() == {"result": "OK"}
    assert flush_redis.get("c") == b"3"


@pytest.mark.parametrize("bad", [["WATCH", "a"], ["BLPOP", "l", 1], ["MULTI"], ["DISCARD"]])
def test_multi_exec_rejects_unsupported_commands(
    bad: list[Any], client: httpx.Client, flush_redis: redis.Redis
) -> None:
    response = client.post("/multi-exec", json=[["SET", "a", "1"], bad])
    assert response.status_code == 400
    assert "not supported" in response.json()["error"]
    assert flush_redis.exists("a") == 0


def test_multi_exec_runtime_error_is_per_item(
    client: httpx.Client, flush_redis: redis.Redis
) -> None:
    flush_redis.set("s", "text")
    response = client.post("/multi-exec", json=[["INCR", "n"], ["LPUSH", "s", "x"], ["INCR", "n"]])
    assert response.status_code == 200
    first, wrongtype, third = response.json()
    assert (first, third) == ({"result": 1}, {"result": 2})
    assert wrongtype["error"].startswith("WRONGTYPE")


def test_base64_on(client: httpx.Client, flush_redis: redis.Redis) -> None:
    assert client.post("/", json=["SET", "k", "v"], headers=B64).json() == {"result": "OK"}
    assert client.post("/", json=["GET", "k"], headers=B64).json() == {"result": b64("v")}
    flush_redis.set("ok", "OK")  # a bulk string "OK" is data, so it is encoded
    assert client.post("/", json=["GET", "ok"], headers=B64).json() == {"result": b64("OK")}
    assert client.post("/", json=["PING"], headers=B64).json() == {"result": b64("PONG")}
    flush_redis.rpush("l", "é", "b")
    assert client.post("/", json=["LRANGE", "l", 0, -1], headers=B64).json() == {
        "result": [b64("é"), b64("b")]
    }
    flush_redis.hset("h", "f", "1")
    assert client.post("/", json=["HGETALL", "h"], headers=B64).json() == {
        "result": [b64("f"), b64("1")]
    }
    assert client.post("/", json=["INCR", "n"], headers=B64).json() == {"result": 1}
    assert client.post("/", json=["GET", "missing"], headers=B64).json() == {"result": None}
    error = client.post("/", json=["INCR", "k"], headers=B64)
    assert error.json() == {"error": "ERR value is not an integer or out of range"}
    piped = client.post("/pipeline", json=[["SET", "x", "y"], ["GET", "x"]], headers=B64)
    assert piped.json() == [{"result": "OK"}, {"result": b64("y")}]
    txn = client.post("/multi-exec", json=[["SET", "x", "z"], ["GET", "x"]], headers=B64)
    assert txn.json() == [{"result": "OK"}, {"result": b64("z")}]


def test_base64_off(client: httpx.Client, flush_redis: redis.Redis) -> None:
    flush_redis.rpush("l", "é", "b")
    assert client.post("/", json=["LRANGE", "l", 0, -1]).json() == {"result": ["é", "b"]}
    assert client.post("/", json=["PING"]).json() == {"result": "PONG"}


def test_non_utf8_value(client: httpx.Client, flush_redis: redis.Redis) -> None:
    raw = b"\xff\xfeab\x00c"
    flush_redis.set("bin", raw)
    encoded = client.post("/", json=["GET", "bin"], headers=B64).json()["result"]
    assert base64.b64decode(encoded) == raw
    assert client.post("/", json=["GET", "bin"]).json() == {"result": "\ufffd\ufffdab\x00c"}


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"a": 1}', b'"GET"', b"[]", b"", b'[["GET", "k"]]', b"[true]", b"[null]"],
    ids=["malformed", "object", "string", "empty", "no-body", "nested", "bool", "null"],
)
def test_bad_single_command_body_is_400_json(client: httpx.Client, body: bytes) -> None:
    response = client.post("/", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("ERR ")


@pytest.mark.parametrize("body", [b"[]", b'["GET", "k"]', b"[[]]", b"nope"])
def test_bad_pipeline_body_is_400_json(client: httpx.Client, body: bytes) -> None:
    for path in ("/pipeline", "/multi-exec"):
        response = client.post(path, content=body)
        assert response.status_code == 400
        assert response.json()["error"].startswith("ERR ")


def test_request_over_10_mb_is_refused(client: httpx.Client, flush_redis: redis.Redis) -> None:
    big = "x" * (10 * 1024 * 1024)
    response = client.post("/", json=["SET", "big", big])
    assert response.status_code == 400
    assert "max request size" in response.json()["error"]
    assert flush_redis.exists("big") == 0


@pytest.mark.parametrize("method", ["DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_json(client: httpx.Client, method: str) -> None:
    response = client.request(method, "/")
    assert response.status_code == 405
    assert "error" in response.json()


@pytest.mark.parametrize(
    "command",
    [
        ["BLPOP", "l", 0],
        ["BRPOPLPUSH", "a", "b", 0],
        ["BZPOPMIN", "z", 0],
        ["XREAD", "BLOCK", 0, "STREAMS", "s", "$"],
        ["XREADGROUP", "GROUP", "g", "c", "BLOCK", 10, "STREAMS", "s", ">"],
        ["SUBSCRIBE", "ch"],
        ["WATCH", "k"],
        ["MULTI"],
        ["SELECT", 1],
    ],
)
def test_unsupported_commands_are_rejected(client: httpx.Client, command: list[Any]) -> None:
    response = client.post("/", json=command)
    assert response.status_code == 400
    assert "not supported" in response.json()["error"]


def test_non_blocking_xread_is_allowed(client: httpx.Client) -> None:
    client.post("/", json=["XADD", "s", "1-1", "f", "v"])
    response = client.post("/", json=["XREAD", "COUNT", 1, "STREAMS", "s", "0"])
    assert response.json() == {"result": [["s", [["1-1", ["f", "v"]]]]]}


def test_every_response_carries_an_increasing_sync_token(
    client: httpx.Client, anon: httpx.Client
) -> None:
    responses = [
        client.post("/", json=["PING"]),
        anon.post("/", json=["PING"]),  # 401
        client.delete("/"),  # 405
        client.post("/", json=["NOSUCHCOMMAND"]),  # 400
    ]
    tokens = [int(r.headers["upstash-sync-token"]) for r in responses]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


async def test_concurrent_requests(
    rest_gateway: BackgroundGateway, flush_redis: redis.Redis
) -> None:
    headers = {"Authorization": f"Bearer {rest_gateway.token}"}
    async with httpx.AsyncClient(base_url=rest_gateway.url, headers=headers) as http:
        responses = await asyncio.gather(
            *(http.post("/", json=["ECHO", f"value-{i}"]) for i in range(40)),
            *(http.post("/", json=["INCR", "n"]) for _ in range(40)),
        )
    echoed = [r.json()["result"] for r in responses[:40]]
    assert echoed == [f"value-{i}" for i in range(40)]
    assert flush_redis.get("n") == b"40"


def test_redis_unreachable_is_500_json_and_recovers() -> None:
    port = free_port()
    with EmbeddedRedis(port) as server, BackgroundGateway(server.url, "t") as gateway:
        headers = {"Authorization": "Bearer t"}
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as http:
            assert http.post("/", json=["SET", "k", "v"]).json() == {"result": "OK"}
            server.stop()
            down = http.post("/", json=["GET", "k"])
            assert down.status_code == 500
            assert down.headers["content-type"] == "application/json"
            assert "Redis" in down.json()["error"]
            assert http.post("/pipeline", json=[["PING"]]).status_code == 500
            server.start()  # same port, empty database
            assert http.post("/", json=["GET", "k"]).json() == {"result": None}


def test_background_gateway_restarts_and_reports_a_busy_port(redis_url: str) -> None:
    gateway = BackgroundGateway(redis_url, "t")
    with gateway:
        port = int(gateway.url.rsplit(":", 1)[1])
        with pytest.raises(StoreError, match="did not start"):
            BackgroundGateway(redis_url, "t", port=port).start()
    gateway.start()  # a second life after stop()
    try:
        response = httpx.post(gateway.url, json=["PING"], headers={"Authorization": "Bearer t"})
        assert response.json() == {"result": "PONG"}
    finally:
        gateway.stop()


def test_entry_point(redis_url: str) -> None:
    token = "entry-point-secret-token"
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tripkit.devstack.rest_gateway",
            "--port",
            str(port),
            "--redis-url",
            redis_url,
        ],
        env={**os.environ, "UPSTASH_REDIS_REST_TOKEN": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == f"UPSTASH_REDIS_REST_URL=http://127.0.0.1:{port}"
        url = line.removeprefix("UPSTASH_REDIS_REST_URL=")
        ok = httpx.post(url, json=["PING"], headers={"Authorization": f"Bearer {token}"})
        assert ok.json() == {"result": "PONG"}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert token not in line + out + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------- pub/sub over SSE


def numsub(raw: redis.Redis, channel: str) -> int:
    ((_, count),) = raw.pubsub_numsub(channel)
    return int(count)


def test_subscribe_streams_upstash_lines(
    rest_gateway: BackgroundGateway, flush_redis: redis.Redis
) -> None:
    headers = {"Authorization": f"Bearer {rest_gateway.token}", "Accept": "text/event-stream"}
    with (
        httpx.Client(base_url=rest_gateway.url, timeout=5) as http,
        http.stream("POST", "/subscribe/news", headers=headers, content=b"[]") as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "data: subscribe,news,1"  # sent once Redis confirmed
        assert next(lines) == ""
        assert numsub(flush_redis, "news") == 1
        flush_redis.publish("news", "hello, world")
        flush_redis.publish("news", '{"a":1}')
        flush_redis.publish("news", "two\nlines")  # SSE: one data line per line
        assert [next(lines) for _ in range(7)] == [
            "data: message,news,hello, world",
            "",
            'data: message,news,{"a":1}',
            "",
            "data: message,news,two",
            "data: lines",
            "",
        ]
    # The client left: the gateway closes its Redis connection.
    assert wait_until(lambda: numsub(flush_redis, "news") == 0)


@pytest.mark.parametrize(
    ("method", "path", "accept", "token", "status", "error"),
    [
        ("POST", "/subscribe/news", "", True, 400, "Accept: text/event-stream"),
        ("GET", "/subscribe/news", "text/event-stream", True, 405, "use POST"),
        ("POST", "/subscribe/a/b", "text/event-stream", True, 400, "one channel"),
        ("POST", "/subscribe", "text/event-stream", True, 400, "one channel"),
        ("POST", "/subscribe/news", "text/event-stream", False, 401, "WRONGPASS"),
    ],
)
def test_subscribe_refuses_what_upstash_would_not_stream(
    rest_gateway: BackgroundGateway,
    method: str,
    path: str,
    accept: str,
    token: bool,
    status: int,
    error: str,
) -> None:
    headers = {"Accept": accept} if accept else {}
    if token:
        headers["Authorization"] = f"Bearer {rest_gateway.token}"
    response = httpx.request(method, rest_gateway.url + path, headers=headers, timeout=5)
    assert response.status_code == status
    assert error in response.json()["error"]


def test_subscribe_stream_ends_when_redis_drops_the_connection(
    rest_gateway: BackgroundGateway, flush_redis: redis.Redis
) -> None:
    headers = {"Authorization": f"Bearer {rest_gateway.token}", "Accept": "text/event-stream"}
    with (
        httpx.Client(base_url=rest_gateway.url, timeout=5) as http,
        http.stream("POST", "/subscribe/news", headers=headers) as stream,
    ):
        lines = stream.iter_lines()
        assert next(lines) == "data: subscribe,news,1"
        flush_redis.client_kill_filter(_type="pubsub")
        assert [line for line in lines if line] == []  # the stream ends: subscribe again
