"""The gateway's RESP2 client keeps reply types apart; tested against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis

from tripkit.devstack.redis_server import EmbeddedRedis
from tripkit.devstack.redis_wire import (
    NULL_ARRAY,
    ErrorReply,
    RespConnection,
    RespPool,
    SimpleString,
    encode_command,
    encode_reply,
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


async def test_replies_encode_back_to_the_bytes_redis_sent(
    redis_url: str, flush_redis: redis.Redis
) -> None:
    """Each reply type, read from a real Redis and written back, is Redis's own RESP2."""
    flush_redis.set("k", b"v\xff")
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    commands: list[list[str | int]] = [
        ["PING"],  # +PONG
        ["GET", "k"],  # a bulk string
        ["GET", "missing"],  # the null bulk string $-1
        ["INCR", "n"],  # an integer
        ["INCR", "k"],  # an error
        ["MGET", "k", "missing"],  # an array with a null in it
        ["XREAD", "COUNT", 1, "STREAMS", "s", "0"],  # the null array *-1
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        pool = RespPool.from_url(redis_url)
        replies = await pool.execute_many(commands)
        await pool.aclose()
        assert replies[-1] is NULL_ARRAY
        flush_redis.delete("n")
        writer.write(b"".join(encode_command(c) for c in commands))
        await writer.drain()
        raw = b""
        expected = b"".join(encode_reply(r) for r in replies)
        while len(raw) < len(expected):
            raw += await asyncio.wait_for(reader.read(65536), 5)
        assert raw == expected
    finally:
        writer.close()


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
