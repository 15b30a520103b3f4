"""Both transports under the load that once wedged the app, on real processes.

A real redis-server and the REST gateway as its own process; Redis is frozen with
``CLIENT PAUSE`` so calls time out, while bursts of calls are cancelled at random. The
app once lost every slot of its HTTP pool this way (encode/httpcore#1093) and answered
nothing until restarted; now each burst must leave the transport answering at once.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from tripkit.errors import RedisBusy, RedisTimeout, StoreError
from tripkit.transport import Transport
from tripkit.transport.resp import RespTransport
from tripkit.transport.rest import RestTransport

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 0.5  # the transport's own timeout, short so the test is quick
SLOTS = 8


@pytest.fixture(scope="module")
def gateway_process(redis_url: str) -> Iterator[tuple[str, str]]:
    """The Upstash-REST gateway in a process of its own: (url, token)."""
    token = secrets.token_urlsafe(16)
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "tripkit.devstack.rest_gateway", "--port", "0"),
            *("--redis-url", redis_url, "--token", token),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("UPSTASH_REDIS_REST_URL="), line
    try:
        yield line.split("=", 1)[1], token
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


@pytest.fixture(params=["rest", "resp"])
async def transport(
    request: pytest.FixtureRequest, redis_url: str, gateway_process: tuple[str, str]
) -> AsyncIterator[Transport]:
    t: Transport = (
        RestTransport(*gateway_process, timeout=TIMEOUT, max_connections=SLOTS, pool_wait=0.3)
        if request.param == "rest"
        else RespTransport(redis_url, timeout=TIMEOUT, max_connections=SLOTS, pool_wait=0.3)
    )
    yield t
    await t.aclose()


@pytest.fixture
def freezer(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.client_unpause()
    client.close()


async def test_bursts_of_timed_out_and_cancelled_calls_leave_the_transport_answering(
    transport: Transport, freezer: redis.Redis
) -> None:
    rng = random.Random(7)
    errors: Counter[str] = Counter()
    cancelled = 0

    async def call() -> None:
        try:
            await transport.execute("GET", "burst:key", retry_safe=True)
        except StoreError as exc:
            errors[type(exc).__name__] += 1

    for _ in range(3):
        freezer.client_pause(1200)  # Redis stops answering
        for _ in range(3):
            # More calls than the old pool had connections (100): they had to wait for one.
            tasks = [asyncio.create_task(call()) for _ in range(200)]
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            for task in rng.sample(tasks, 70):
                cancelled += task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # The burst did what production does: calls timed out, waited in vain, were cancelled.
    assert errors[RedisTimeout.__name__] > 0, errors
    assert errors[RedisBusy.__name__] > 0, errors
    assert cancelled > 0

    freezer.client_unpause()
    await asyncio.sleep(TIMEOUT + 0.2)  # calls whose callers left end within the timeout
    assert transport.gate.in_flight == 0  # type: ignore[attr-defined]

    started = time.monotonic()
    assert await transport.execute("PING") == b"PONG"
    assert time.monotonic() - started < 0.5
    # and every slot works again, not only one
    replies = await asyncio.gather(*(transport.execute("PING") for _ in range(3 * SLOTS)))
    assert replies == [b"PONG"] * (3 * SLOTS)


async def test_a_call_that_finds_every_connection_busy_fails_fast_and_says_what_to_do(
    transport: Transport, freezer: redis.Redis
) -> None:
    freezer.client_pause(1500)
    holders = [asyncio.create_task(transport.execute("GET", "burst:key")) for _ in range(SLOTS)]
    await asyncio.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(RedisBusy) as info:
        await transport.execute("GET", "burst:key")
    assert 0.25 < time.monotonic() - started < 0.45  # the pool wait, not the 0.5 s timeout
    message = str(info.value)
    assert f"all {SLOTS} connections were in use" in message
    assert "TRIPKIT_REDIS_MAX_CONNECTIONS" in message
    await asyncio.gather(*holders, return_exceptions=True)


async def test_a_timed_out_call_is_not_sent_again(
    transport: Transport, freezer: redis.Redis
) -> None:
    freezer.client_pause(1000)
    before = transport.counter.by_name["GET"]
    with pytest.raises(RedisTimeout):
        await transport.execute("GET", "burst:key", retry_safe=True)
    # one attempt: retrying would double the load on a Redis that is already slow
    assert transport.counter.by_name["GET"] - before == 1
