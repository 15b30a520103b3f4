"""Both transports against a real Redis: reply shapes, errors users can act on, timeouts."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from tripkit.devstack.redis_server import EmbeddedRedis
from tripkit.devstack.testing import RedisCommandCounter
from tripkit.errors import (
    CommandError,
    QuotaExceeded,
    RedisAuthError,
    RedisTimeout,
    RedisUnavailable,
)
from tripkit.transport import Transport
from tripkit.transport.resp import RespTransport
from tripkit.transport.rest import RestTransport


async def test_reply_shapes_are_the_same(transport: Transport, redis_url: str) -> None:
    key = f"shape:{transport.name}"
    assert await transport.execute("SET", key, "OK") == b"OK"  # simple-string reply
    assert await transport.execute("GET", key) == b"OK"  # bulk string that reads "OK"
    assert await transport.execute("DEL", key, f"{key}:none") == 1
    assert await transport.execute("GET", key) is None
    await transport.execute("RPUSH", f"{key}:l", "a", "b")
    assert await transport.execute("LRANGE", f"{key}:l", 0, -1) == [b"a", b"b"]
    raw = redis.Redis.from_url(redis_url)
    raw.set(f"{key}:bin", b"\xff\x00\xfe")  # not UTF-8: must come back byte for byte
    assert await transport.execute("GET", f"{key}:bin") == b"\xff\x00\xfe"
    raw.close()
    assert transport.counter.by_name["GET"] == 3


async def test_pipeline_keeps_the_other_results(transport: Transport) -> None:
    key = f"pipe:{transport.name}"
    out = await transport.pipeline(["SET", key, "x"], ["INCR", key], ["GET", key])
    assert out[0] == b"OK" and out[2] == b"x"
    assert isinstance(out[1], CommandError) and "not an integer" in str(out[1])
    assert transport.counter.by_name == {"SET": 1, "INCR": 1, "GET": 1}


@pytest.mark.parametrize(
    ("message", "kind", "remedy"),
    [
        ("ERR max daily request limit exceeded. Limit: 10000", QuotaExceeded, "poll less often"),
        ("ERR max requests limit exceeded. Limit: 500000", QuotaExceeded, "Upstash plan"),
        (
            "WRONGPASS invalid or missing auth token",
            RedisAuthError,
            "check the Upstash credentials",
        ),
    ],
)
async def test_service_errors_become_typed_errors(
    transport: Transport, message: str, kind: type, remedy: str
) -> None:
    # A script makes the real server send exactly this error over the wire.
    with pytest.raises(kind) as info:
        await transport.execute("EVAL", f"return redis.error_reply('{message}')", 0)
    assert remedy.lower() in str(info.value).lower()


async def test_resp_sends_nothing_it_does_not_count() -> None:
    """No hidden CLIENT SETINFO on connect: Upstash would bill it."""
    with EmbeddedRedis() as server:
        counter = RedisCommandCounter(server.url)
        counter.reset()
        t = RespTransport(server.url, timeout=3)
        await t.execute("SET", "k", "v")
        await t.execute("GET", "k", retry_safe=True)
        await t.aclose()
        executed = counter.counts()
        counter.close()
    assert executed == dict(t.counter.by_name) == {"SET": 1, "GET": 1}


async def test_command_errors_are_reported(transport: Transport) -> None:
    with pytest.raises(CommandError, match="unknown command"):
        await transport.execute("NOSUCHCOMMAND", "x")


async def test_wrong_rest_token_is_an_auth_error(rest_gateway) -> None:  # type: ignore[no-untyped-def]
    t = RestTransport(rest_gateway.url, "not-the-token", timeout=3)
    with pytest.raises(RedisAuthError) as info:
        await t.execute("GET", "x")
    assert "check the upstash credentials" in str(info.value).lower()
    assert "not-the-token" not in str(info.value)
    await t.aclose()


async def test_wrong_redis_password_is_an_auth_error() -> None:
    with EmbeddedRedis(password="the-right-one") as server:
        t = RespTransport(f"redis://default:not-it@127.0.0.1:{server.port}/0", timeout=3)
        with pytest.raises(RedisAuthError) as info:
            await t.execute("GET", "x")
        assert "not-it" not in str(info.value)
        await t.aclose()
        good = RespTransport(server.url, timeout=3)
        assert await good.execute("PING") == b"PONG"
        await good.aclose()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


@pytest.mark.parametrize("kind", ["resp", "rest"])
async def test_a_silent_server_times_out(silent_server: int, kind: str) -> None:
    t: Transport = (
        RespTransport(f"redis://127.0.0.1:{silent_server}/0", timeout=0.5)
        if kind == "resp"
        else RestTransport(f"http://127.0.0.1:{silent_server}", "tok", timeout=0.5)
    )
    started = time.monotonic()
    with pytest.raises(RedisTimeout, match="did not answer in time"):
        await t.execute("GET", "x")
    assert time.monotonic() - started < 5
    await t.aclose()


@pytest.mark.parametrize("kind", ["resp", "rest"])
async def test_nothing_listening_is_unavailable(kind: str) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    t: Transport = (
        RespTransport(f"redis://127.0.0.1:{port}/0", timeout=1)
        if kind == "resp"
        else RestTransport(f"http://127.0.0.1:{port}", "tok", timeout=1)
    )
    with pytest.raises(RedisUnavailable, match="is the database paused"):
        await t.execute("GET", "x")
    await t.aclose()
