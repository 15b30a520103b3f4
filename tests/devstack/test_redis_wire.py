"""The gateway's RESP2 client keeps reply types apart; tested against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis

from tripkit.devstack.redis_server import EmbeddedRedis
from tripkit.devstack.redis_wire import (
    ErrorReply,
    RespConnection,
    RespPool,
    SimpleString,
    encode_command,
)
from tripkit.errors import RedisAuthError, RedisTimeout, RedisUnavailable


def test_encode_command() -> None:
    assert encode_command(["SET", b"k\xff", 7, 1.5]) == (
        b"*4\r\n$3\r\nSET\r\n$2\r\nk\xff\r\n$1\r\n7\r\n$3\r\n1.5\r\n"
    )
    with pytest.raises(TypeError):
        encode_command(["SET", "k", True])
    with pytest.raises(ValueError):
        encode_command([])


async def test_reply_types(redis_url: str, flush_redis: redis.Redis) -> None:
    pool = RespPool.from_url(redis_url)
    try:
        ok = await pool.execute("SET", "k", "OK")
        assert ok == "OK" and type(ok) is SimpleString
        bulk = await pool.execute("GET", "k")
        assert bulk == b"OK" and type(bulk) is bytes
        assert await pool.execute("GET", "missing") is None
        assert await pool.execute("INCR", "n") == 1
        await pool.execute("RPUSH", "l", "a", b"\xff")
        assert await pool.execute("LRANGE", "l", 0, -1) == [b"a", b"\xff"]
        assert await pool.execute("LRANGE", "missing", 0, -1) == []
        err = await pool.execute("INCR", "k")
        assert type(err) is ErrorReply and err.code == "ERR"
        nested = await pool.execute_many(
            [["MULTI"], ["INCR", "k"], ["LRANGE", "l", 0, 0], ["EXEC"]]
        )
        assert nested[1:3] == ["QUEUED", "QUEUED"]
        exec_reply = nested[3]
        assert isinstance(exec_reply, list)
        assert isinstance(exec_reply[0], ErrorReply) and exec_reply[1] == [b"a"]
    finally:
        await pool.aclose()


async def test_concurrent_callers_do_not_interleave(redis_server: EmbeddedRedis) -> None:
    conn = await RespConnection.open("127.0.0.1", redis_server.port)
    try:
        replies = await asyncio.gather(*(conn.execute("ECHO", f"v{i}" * 1000) for i in range(50)))
        assert replies == [f"v{i}".encode() * 1000 for i in range(50)]
    finally:
        await conn.aclose()


async def test_timeout_closes_the_connection(redis_url: str) -> None:
    pool = RespPool.from_url(redis_url, timeout=0.2)
    try:
        async with pool.connection() as conn:
            with pytest.raises(RedisTimeout):
                await conn.execute("BLPOP", "never-pushed", 5)
            assert conn.closed
        assert await pool.execute("PING") == "PONG"  # a fresh connection
    finally:
        await pool.aclose()


async def test_password_and_unreachable() -> None:
    with EmbeddedRedis(password="pw") as server:
        conn = await RespConnection.open("127.0.0.1", server.port, "pw")
        assert await conn.execute("PING") == "PONG"
        await conn.aclose()
        with pytest.raises(RedisAuthError):
            await RespConnection.open("127.0.0.1", server.port, "wrong")
        port = server.port
    with pytest.raises(RedisUnavailable):
        await RespConnection.open("127.0.0.1", port)
