"""Shared fixtures: one real Redis and one REST gateway for the whole session.

No fakes: tests talk to a real redis-server (see tripkit.devstack.redis_server) and to
the Upstash-compatible gateway over real HTTP.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from helpers import ModelControl

from tripkit.devstack.redis_server import EmbeddedRedis
from tripkit.devstack.rest_gateway import BackgroundGateway
from tripkit.devstack.stack import LocalStack, StackConfig
from tripkit.transport import Transport
from tripkit.transport.resp import RespTransport
from tripkit.transport.rest import RestTransport


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """An embedded redis-server, started once (from the main thread) and stopped at the end."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis) -> str:
    """``redis://127.0.0.1:PORT/0`` of the session's server."""
    return redis_server.url


@pytest.fixture(scope="session")
def rest_gateway(redis_url: str) -> Iterator[BackgroundGateway]:
    """The Upstash-REST gateway on a free port, in a background thread: ``.url``, ``.token``."""
    with BackgroundGateway(redis_url, secrets.token_urlsafe(24)) as gateway:
        yield gateway


@pytest.fixture
def flush_redis(redis_url: str) -> Iterator[redis.Redis]:
    """FLUSHALL before the test; yields a sync redis-py client on the session's server."""
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    """The whole offline stack as separate processes (`tripkit dev`), fast settings:
    no streaming delay, executor retries after 50-400 ms instead of 15 s-5 min."""
    config = StackConfig(chunk_delay=0.0, backoff_ms=[50, 100, 200, 400], unreachable_budget=30)
    with LocalStack(config) as running:
        yield running


@pytest.fixture
def model_control(stack: LocalStack) -> Iterator[ModelControl]:
    """The model server's test switches, reset before and after each test."""
    control = ModelControl(stack.openai_base_url)
    control.reset()
    yield control
    control.reset()


# Each test that takes it runs once over RESP and once over REST.
@pytest.fixture(params=["resp", "rest"])
async def transport(
    request: pytest.FixtureRequest, redis_url: str, rest_gateway: BackgroundGateway
) -> AsyncIterator[Transport]:
    t: Transport = (
        RespTransport(redis_url, timeout=3)
        if request.param == "resp"
        else RestTransport(rest_gateway.url, rest_gateway.token, timeout=3)
    )
    yield t
    await t.aclose()
