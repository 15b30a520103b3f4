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
    [
        b"{not json",
        b'{"a": 1}',
        b'"GET"',
        b"[]",
        b"",
        b'[["GET", "k"]]',
        b'["SET", "k", {"a": 1}]',
        b"[null]",
    ],
    ids=["malformed", "object", "string", "empty", "no-body", "nested", "object-arg", "null"],
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


# --- what Upstash accepts and its SDKs send ---------------------------------------------

#: The headers Upstash's SDKs send with every command (upstash-redis and @upstash/redis).
SDK_HEADERS = {
    "Upstash-Telemetry-Sdk": "py-upstash-redis@v1.8.0",
    "Upstash-Telemetry-Runtime": "python@v3.11.7",
    "Upstash-Telemetry-Platform": "unknown",
    "Upstash-Sync-Token": "",
}
RESP2 = {"Upstash-Response-Format": "resp2"}


def test_json_booleans_are_arguments_as_the_sdks_send_them(
    client: httpx.Client, flush_redis: redis.Redis
) -> None:
    # upstash-redis sends set("k", True) as ["SET", "k", true].
    assert client.post("/", json=["SET", "t", True]).json() == {"result": "OK"}
    assert client.post("/", json=["GET", "t"]).json() == {"result": "true"}
    piped = client.post("/pipeline", json=[["SET", "f", False], ["HSET", "h", "on", True]])
    assert piped.json() == [{"result": "OK"}, {"result": 1}]
    assert client.post("/multi-exec", json=[["RPUSH", "l", True, 2, 1.5]]).json() == [
        {"result": 1 + 2}
    ]
    assert flush_redis.get("f") == b"false"
    assert flush_redis.hget("h", "on") == b"true"
    assert flush_redis.lrange("l", 0, -1) == [b"true", b"2", b"1.5"]


@pytest.mark.parametrize(
    ("arg", "kind"), [(None, "null"), ([1], "an array"), ({"a": 1}, "an object")]
)
def test_arguments_without_a_redis_form_are_refused(
    client: httpx.Client, flush_redis: redis.Redis, arg: Any, kind: str
) -> None:
    response = client.post("/", json=["SET", "k", arg])
    assert response.status_code == 400
    assert response.json() == {
        "error": f"ERR command: arguments must be strings, numbers or booleans, not {kind}"
    }
    assert flush_redis.exists("k") == 0


def test_the_sdks_own_headers_are_accepted(client: httpx.Client) -> None:
    response = client.post("/", json=["PING"], headers=SDK_HEADERS)
    assert (response.status_code, response.json()) == (200, {"result": "PONG"})
    sync = {"Upstash-Sync-Token": response.headers["upstash-sync-token"]}
    assert client.post("/", json=["PING"], headers=sync).json() == {"result": "PONG"}


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Upstash-Read-Only": "true"}, "Upstash-Read-Only header is not supported"),
        ({"upstash-telemetry-disabled": "1"}, "Upstash-Telemetry-Disabled header is not"),
        ({"Upstash-Encoding": "gzip"}, "invalid Upstash-Encoding 'gzip'"),
        ({"Upstash-Response-Format": "resp3"}, "invalid Upstash-Response-Format 'resp3'"),
        ({**RESP2, **B64}, "base64 is not allowed with Upstash-Response-Format: resp2"),
    ],
    ids=["unknown", "unknown-lowercase", "encoding", "format", "resp2-with-base64"],
)
def test_upstash_headers_it_does_not_implement_are_refused(
    client: httpx.Client, flush_redis: redis.Redis, headers: dict[str, str], message: str
) -> None:
    for path, body in (("/", ["SET", "k", "v"]), ("/pipeline", [["SET", "k", "v"]])):
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/json"
        assert message in response.json()["error"]
    assert flush_redis.exists("k") == 0  # refused before anything ran


def test_response_format_json_is_the_default(client: httpx.Client) -> None:
    explicit = client.post("/", json=["ECHO", "x"], headers={"Upstash-Response-Format": "JSON"})
    assert explicit.json() == client.post("/", json=["ECHO", "x"]).json() == {"result": "x"}


def test_resp2_answers_with_redis_bytes(client: httpx.Client, flush_redis: redis.Redis) -> None:
    def resp2(body: list[Any], path: str = "/") -> httpx.Response:
        return client.post(path, json=body, headers=RESP2)

    ok = resp2(["SET", "k", "v\u00e9"])
    assert (ok.status_code, ok.content) == (200, b"+OK\r\n")
    assert ok.headers["content-type"] == "application/octet-stream"
    assert "upstash-sync-token" in ok.headers
    assert resp2(["GET", "k"]).content == b"$3\r\nv\xc3\xa9\r\n"
    assert resp2(["GET", "missing"]).content == b"$-1\r\n"
    assert resp2(["INCR", "n"]).content == b":1\r\n"
    assert resp2(["MGET", "k", "missing"]).content == b"*2\r\n$3\r\nv\xc3\xa9\r\n$-1\r\n"
    assert resp2(["XREAD", "STREAMS", "s", "0"]).content == b"*-1\r\n"
    flush_redis.set("bin", b"\xff\x00")
    assert resp2(["GET", "bin"]).content == b"$2\r\n\xff\x00\r\n"
    error = resp2(["INCR", "k"])
    assert error.status_code == 400
    assert error.content == b"-ERR value is not an integer or out of range\r\n"
    refused = resp2(["BLPOP", "l", 0])
    assert refused.status_code == 400
    assert refused.content == b"-ERR blocking command BLPOP is not supported over REST\r\n"
    path_style = client.get("/get/k", headers=RESP2)
    assert path_style.content == b"$3\r\nv\xc3\xa9\r\n"
    piped = resp2([["SET", "p", "1"], ["INCR", "k"], ["INCR", "p"]], "/pipeline")
    assert piped.status_code == 200
    assert piped.content == (b"+OK\r\n-ERR value is not an integer or out of range\r\n:2\r\n")


def test_resp2_does_not_apply_to_multi_exec(client: httpx.Client) -> None:
    """Upstash: a transaction is answered in JSON whatever the format asked."""
    response = client.post("/multi-exec", json=[["SET", "a", "1"], ["INCR", "a"]], headers=RESP2)
    assert response.headers["content-type"] == "application/json"
    assert response.json() == [{"result": "OK"}, {"result": 2}]


def test_query_parameters_add_arguments_after_the_body(
    client: httpx.Client, flush_redis: redis.Redis
) -> None:
    # Upstash: POST /set/k?EX=100 with the value in the body is SET k <body> EX 100.
    response = client.post("/set/k", params={"EX": "100"}, content=b'{"json": 1}')
    assert response.json() == {"result": "OK"}
    assert flush_redis.get("k") == b'{"json": 1}'
    assert 0 < flush_redis.ttl("k") <= 100
    assert client.post("/set/k?NX", content=b"other").json() == {"result": None}
    assert client.get("/set/e/v", params={"PX": "5000", "_token": "ignored"}).json() == {
        "result": "OK"
    }
    assert 0 < flush_redis.pttl("e") <= 5000
    refused = client.post("/", params={"EX": "1"}, json=["SET", "j", "v"])
    assert refused.status_code == 400 and "query parameters (EX, 1)" in refused.json()["error"]
    assert flush_redis.exists("j") == 0


def test_commands_upstash_serves_work_on_the_embedded_server(
    client: httpx.Client, flush_redis: redis.Redis
) -> None:
    """Commands Upstash's SDK tests use that Redis 6.2 (our earlier server) lacked."""

    def run(*command: Any) -> Any:
        response = client.post("/", json=list(command))
        assert response.status_code == 200, (command, response.text)
        return response.json()["result"]

    run("GEOADD", "g", 13.361389, 38.115556, "Palermo", 15.087269, 37.502669, "Catania")
    assert float(run("GEODIST", "g", "Palermo", "Catania", "km")) == pytest.approx(166.27, 0.01)
    near = run("GEOSEARCH", "g", "FROMLONLAT", 15, 37, "BYBOX", 400, 400, "KM", "ASC", "WITHDIST")
    assert [name for name, _ in near] == ["Catania", "Palermo"]
    run("SET", "k", "v")
    assert run("EXPIRE", "k", 100, "NX") == 1
    assert run("EXPIRE", "k", 200, "NX") == 0
    assert run("EXPIRE", "k", 50, "GT") == 0
    assert run("EXPIRE", "k", 300, "GT") == 1
    assert run("EXPIRE", "k", 10, "XX") == 1 and run("TTL", "k") <= 10
    assert run("GETEX", "k", "PERSIST") == "v" and run("TTL", "k") == -1
    assert run("EVAL_RO", "return redis.call('GET', KEYS[1])", 1, "k") == "v"
    run("RPUSH", "l", "a", "b", "c")
    assert run("LMPOP", 2, "missing", "l", "RIGHT", "COUNT", 2) == ["l", ["c", "b"]]
    run("ZADD", "z", 1, "one", 2, "two")
    assert run("ZMPOP", 1, "z", "MIN") == ["z", [["one", "1"]]]
    run("SADD", "s1", "a", "b")
    run("SADD", "s2", "b", "c")
    assert run("SINTERCARD", 2, "s1", "s2") == 1
    assert run("OBJECT", "ENCODING", "l") == "listpack"
    assert run("BITCOUNT", "k", 0, 3, "BIT") == 3  # "v" is 0b0111_0110
    assert run("SET", "k", "w", "GET") == "v"
