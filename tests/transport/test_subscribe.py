"""Subscriptions on both transports against a real Redis (REST through the gateway's
``POST /subscribe/<channel>``): confirmed before returned, messages in order, a lost
connection reported rather than silently replaced."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import redis
from helpers import wait_until

from tripkit.devstack.rest_gateway import BackgroundGateway
from tripkit.devstack.testing import free_port
from tripkit.errors import RedisAuthError, RedisUnavailable, StoreError
from tripkit.transport import Subscription, Transport
from tripkit.transport.resp import RespTransport
from tripkit.transport.rest import RestTransport


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def subscribers(raw: redis.Redis, channel: str) -> int:
    ((_, count),) = raw.pubsub_numsub(channel)
    return int(count)


async def take(subscription: Subscription, n: int) -> list[bytes]:
    out: list[bytes] = []
    async with asyncio.timeout(5):
        async for payload in subscription:
            out.append(payload)
            if len(out) == n:
                break
    return out


async def test_messages_arrive_in_order_on_one_connection(
    transport: Transport, raw: redis.Redis
) -> None:
    channel = f"ch:{uuid.uuid4().hex}"
    subscription = await transport.subscribe(channel)
    # Confirmed when returned: a message published now is not missed.
    assert subscribers(raw, channel) == 1
    sent = [b"plain", b"with,commas,inside", "Hoàn Kiếm".encode(), b'{"json": [1, 2]}']
    for payload in sent:
        raw.publish(channel, payload)
    assert await take(subscription, len(sent)) == sent
    assert transport.counter.by_name == {"SUBSCRIBE": 1}
    await subscription.aclose()
    # Over REST the gateway closes its Redis connection once it sees the client leave.
    assert wait_until(lambda: subscribers(raw, channel) == 0)


async def test_a_killed_connection_is_reported_not_silently_replaced(
    transport: Transport, raw: redis.Redis
) -> None:
    channel = f"ch:{uuid.uuid4().hex}"
    subscription = await transport.subscribe(channel)
    raw.publish(channel, b"before")
    messages = aiter(subscription)
    async with asyncio.timeout(5):
        assert await anext(messages) == b"before"
    raw.client_kill_filter(_type="pubsub")
    with pytest.raises(RedisUnavailable):
        async with asyncio.timeout(5):
            await anext(messages)
    await subscription.aclose()
    await asyncio.sleep(0.2)
    assert subscribers(raw, channel) == 0  # nothing subscribed again behind our back


async def test_subscribing_to_a_redis_that_is_not_there_fails_fast() -> None:
    resp = RespTransport(f"redis://127.0.0.1:{free_port()}/0", timeout=2)
    with pytest.raises(RedisUnavailable):
        await resp.subscribe("anything")
    await resp.aclose()
    rest = RestTransport(f"http://127.0.0.1:{free_port()}", "token", timeout=2)
    with pytest.raises(StoreError):
        await rest.subscribe("anything")
    await rest.aclose()


async def test_rest_subscribe_with_a_wrong_token_is_an_auth_error(
    rest_gateway: BackgroundGateway,
) -> None:
    rest = RestTransport(rest_gateway.url, "not-the-token", timeout=2)
    with pytest.raises(RedisAuthError):
        await rest.subscribe("anything")
    await rest.aclose()
