"""The app under a burst, as processes in production shape: no wedge, on either transport.

The outage this guards against: a spike of requests made the app's Redis calls time out
and be cancelled until its HTTP pool had lost every slot; from then on every request
that touched Redis took 10 s and answered 503, until the app was restarted. Here Redis
is frozen while a burst of polls, POSTs and health checks arrives, clients give up on
them, and then a single request must be answered at once, on both transports.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import redis
from helpers import wait_final

from tripkit.devstack.stack import LocalStack, StackConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PREFS = {"interests": ["food"], "tripLengthDays": 2, "budget": 800, "bundleCount": 1}


@pytest.fixture(scope="module", params=["rest", "resp"])
def tight_stack(request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    """A stack whose app gives Redis 0.5 s and 8 connections, so a frozen Redis shows."""
    config = StackConfig(
        chunk_delay=0.0,
        backoff_ms=[50, 100, 200],
        workers=1,
        redis_transport=request.param,
        extra_app_env={
            "TRIPKIT_REDIS_TIMEOUT": "0.5",
            "TRIPKIT_REDIS_MAX_CONNECTIONS": "8",
            "TRIPKIT_REDIS_POOL_WAIT": "0.3",
        },
    )
    with LocalStack(config) as stack:
        yield stack


async def burst(api: str, session_id: str, n: int) -> Counter[str]:
    """``n`` polls, POSTs and health checks at once, each given up after 0.4 s."""
    seen: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(base_url=api, timeout=0.4, limits=limits) as http:

        async def one(i: int) -> None:
            try:
                if i % 10 == 0:
                    response = await http.post("/api/generate-bundles", json=PREFS)
                elif i % 10 == 1:
                    response = await http.get("/healthz")
                else:
                    response = await http.get(f"/api/session/{session_id}")
                seen[str(response.status_code)] += 1
            except httpx.TimeoutException:
                seen["gave up"] += 1

        await asyncio.gather(*(one(i) for i in range(n)))
    return seen


def test_a_burst_against_a_frozen_redis_leaves_the_app_answering_at_once(
    tight_stack: LocalStack,
) -> None:
    stack = tight_stack
    created = httpx.post(f"{stack.api_url}/api/generate-bundles", json=PREFS, timeout=10)
    assert created.status_code == 202, created.text
    session_id = created.json()["sessionId"]
    assert wait_final(stack.api_url, session_id)["status"] == "completed"

    freezer = redis.Redis.from_url(stack.redis_url)
    try:
        seen: Counter[str] = Counter()
        for _ in range(3):
            freezer.client_pause(1500)
            seen += asyncio.run(burst(stack.api_url, session_id, 200))
    finally:
        freezer.client_unpause()
        freezer.close()
    # the burst hurt: the app said it was unavailable (503), and clients may have given
    # up too (none do when every call finds the pool busy and is refused at once)
    assert seen["503"] > 0 and seen["200"] < sum(seen.values()), seen

    time.sleep(1.0)  # calls in flight end within the app's 0.5 s Redis timeout
    with httpx.Client(base_url=stack.api_url, timeout=5) as http:
        started = time.monotonic()
        poll = http.get(f"/api/session/{session_id}")
        elapsed = time.monotonic() - started
        assert poll.status_code == 200, poll.text
        assert elapsed < 1.0, f"the first poll after the burst took {elapsed:.2f} s"
        assert http.get("/healthz").json()["status"] == "ok"
        # and it keeps working: a new generation goes all the way
        fresh = http.post("/api/generate-bundles", json=PREFS)
        assert fresh.status_code == 202, fresh.text
    assert wait_final(stack.api_url, fresh.json()["sessionId"])["status"] == "completed"


def test_a_busy_store_answers_503_with_retry_after(tight_stack: LocalStack) -> None:
    stack = tight_stack
    freezer = redis.Redis.from_url(stack.redis_url)
    freezer.client_pause(1500)
    try:

        async def flood() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=5) as http:
                return await asyncio.gather(
                    *(http.get(f"/api/session/{'ab' * 16}") for _ in range(40))
                )

        responses = asyncio.run(flood())
    finally:
        freezer.client_unpause()
        freezer.close()
    busy = [r for r in responses if r.status_code == 503 and r.headers.get("retry-after")]
    assert busy, Counter(r.status_code for r in responses)
    body = busy[0].json()
    assert body["error"] == "Session store unavailable"
    assert "TRIPKIT_REDIS_MAX_CONNECTIONS" in body["hint"]
    assert "127.0.0.1" not in busy[0].text  # the address stays in the operator's log
