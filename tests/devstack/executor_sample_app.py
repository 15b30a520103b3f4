"""A small FastAPI app served by the REAL inngest SDK, for the executor's tests.

Each function exercises one part of the protocol. Side effects are counted per event id in
a :class:`Recorder`, so a test can prove that a memoized step ran exactly once, that a
flaky step ran three times with the configured backoff, and so on.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import fastapi
import inngest
import inngest.experimental.ai.openai
import inngest.fast_api

APP_ID = "exec-test"


@dataclass
class Recorder:
    """Thread-safe counters and timestamps, keyed ``"<event id>:<what>"``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: list[dict[str, Any]] = field(default_factory=list)

    def hit(self, key: str) -> int:
        with self.lock:
            self.counts[key] += 1
            self.times[key].append(time.monotonic())
            return self.counts[key]

    def count(self, key: str) -> int:
        with self.lock:
            return self.counts.get(key, 0)


def _seconds(ctx: inngest.Context, default: float) -> float:
    """The event's ``seconds`` field (how long a step takes), or ``default``."""
    value = ctx.event.data.get("seconds", default)
    return float(value) if isinstance(value, int | float | str) else default


def build_app(
    *,
    api_base_url: str,
    signing_key: str | None = None,
    streaming: bool = False,
    app_id: str = APP_ID,
) -> tuple[fastapi.FastAPI, inngest.Inngest, Recorder]:
    """The app, its client (dev mode, or production with ``signing_key``) and its recorder."""
    rec = Recorder()
    client = inngest.Inngest(
        app_id=app_id,
        is_production=signing_key is not None,
        signing_key=signing_key,
        api_base_url=api_base_url,
        event_api_base_url=api_base_url,
    )

    def key(ctx: inngest.Context, what: str) -> str:
        return f"{ctx.event.id}:{what}"

    @client.create_function(fn_id="seq", trigger=inngest.TriggerEvent(event="test/seq"))
    async def seq(ctx: inngest.Context) -> dict[str, Any]:
        async def step(name: str, value: int) -> int:
            rec.hit(key(ctx, name))
            return value

        a = await ctx.step.run("a", step, "a", 1)
        b = await ctx.step.run("b", step, "b", 2)
        c = await ctx.step.run("c", step, "c", 3)
        return {"a": a, "b": b, "c": c, "sum": a + b + c, "n": ctx.event.data.get("n")}

    @client.create_function(
        fn_id="flaky", retries=3, trigger=inngest.TriggerEvent(event="test/flaky")
    )
    async def flaky(ctx: inngest.Context) -> str:
        async def shaky() -> str:
            n = rec.hit(key(ctx, "shaky"))
            if n <= 2:
                raise RuntimeError(f"transient failure {n}")
            return f"ok after {n}"

        return await ctx.step.run("shaky", shaky)

    @client.create_function(
        fn_id="nonretriable", retries=3, trigger=inngest.TriggerEvent(event="test/nonretriable")
    )
    async def nonretriable(ctx: inngest.Context) -> None:
        rec.hit(key(ctx, "body"))
        raise inngest.NonRetriableError("this input can never work")

    async def record_failure(ctx: inngest.Context) -> str:
        with rec.lock:
            rec.failures.append(dict(ctx.event.data))
        return "recorded"

    @client.create_function(
        fn_id="doomed",
        retries=0,
        on_failure=record_failure,
        trigger=inngest.TriggerEvent(event="test/doomed"),
    )
    async def doomed(ctx: inngest.Context) -> None:
        async def work() -> None:
            rec.hit(key(ctx, "work"))
            raise ValueError("boom")

        await ctx.step.run("work", work)

    @client.create_function(
        fn_id="caught", retries=1, trigger=inngest.TriggerEvent(event="test/caught")
    )
    async def caught(ctx: inngest.Context) -> dict[str, Any]:
        async def always_fails() -> None:
            rec.hit(key(ctx, "always"))
            raise KeyError("missing thing")

        try:
            await ctx.step.run("always", always_fails)
        except inngest.StepError as err:
            return {"caught": err.name, "message": err.message}
        return {"caught": None}

    @client.create_function(fn_id="parallel", trigger=inngest.TriggerEvent(event="test/parallel"))
    async def parallel(ctx: inngest.Context) -> dict[str, Any]:
        async def slow(name: str) -> str:
            rec.hit(key(ctx, f"{name}.start"))
            await asyncio.sleep(0.4)
            rec.hit(key(ctx, f"{name}.end"))
            return name.upper()

        results = await ctx.group.parallel(
            (
                lambda: ctx.step.run("p1", slow, "p1"),
                lambda: ctx.step.run("p2", slow, "p2"),
                lambda: ctx.step.run("p3", slow, "p3"),
            )
        )

        async def after() -> int:
            rec.hit(key(ctx, "after"))
            return len(results)

        count = await ctx.step.run("after", after)
        return {"results": list(results), "count": count}

    @client.create_function(fn_id="napper", trigger=inngest.TriggerEvent(event="test/sleep"))
    async def napper(ctx: inngest.Context) -> dict[str, Any]:
        async def mark(what: str) -> float:
            rec.hit(key(ctx, what))
            return time.time()

        before = await ctx.step.run("before", mark, "before")
        await ctx.step.sleep("nap", timedelta(seconds=_seconds(ctx, 1)))
        after = await ctx.step.run("after", mark, "after")
        return {"slept": after - before}

    @client.create_function(
        fn_id="retry-after", retries=2, trigger=inngest.TriggerEvent(event="test/retry-after")
    )
    async def retry_after(ctx: inngest.Context) -> str:
        if rec.hit(key(ctx, "body")) == 1:
            raise inngest.RetryAfterError("not yet", timedelta(milliseconds=700))
        return "finally"

    @client.create_function(fn_id="waiter", trigger=inngest.TriggerEvent(event="test/wait"))
    async def waiter(ctx: inngest.Context) -> dict[str, Any] | None:
        approval = await ctx.step.wait_for_event(
            "approval",
            event="test/approved",
            if_exp="async.data.ticket == event.data.ticket",
            timeout=timedelta(seconds=_seconds(ctx, 30)),
        )
        return None if approval is None else {"by": approval.data.get("by"), "id": approval.id}

    @client.create_function(fn_id="inferrer", trigger=inngest.TriggerEvent(event="test/infer"))
    async def inferrer(ctx: inngest.Context) -> None:
        adapter = inngest.experimental.ai.openai.Adapter(auth_key="unused", model="gpt-x")
        await ctx.step.ai.infer("ask", adapter=adapter, body={"messages": []})

    @client.create_function(
        fn_id="slow", retries=1, trigger=inngest.TriggerEvent(event="test/slow")
    )
    async def slow(ctx: inngest.Context) -> str:
        async def crawl() -> str:
            rec.hit(key(ctx, "crawl"))
            await asyncio.sleep(_seconds(ctx, 1))
            return "late"

        return await ctx.step.run("crawl", crawl)

    async def occupy(ctx: inngest.Context, what: str) -> None:
        """A step that records when it starts and ends, in event-independent keys too."""
        rec.hit(f"{what}.start")
        rec.hit(key(ctx, "start"))
        await asyncio.sleep(_seconds(ctx, 0.2))
        rec.hit(key(ctx, "end"))
        rec.hit(f"{what}.end")

    @client.create_function(
        fn_id="limited",
        concurrency=[inngest.Concurrency(limit=1)],
        trigger=inngest.TriggerEvent(event="test/limited"),
    )
    async def limited(ctx: inngest.Context) -> str:
        await ctx.step.run("one", occupy, ctx, "limited")
        await ctx.step.run("two", occupy, ctx, "limited")
        return "done"

    @client.create_function(
        fn_id="per-user",
        concurrency=[inngest.Concurrency(limit=1, key="'user:' + event.data.user")],
        trigger=inngest.TriggerEvent(event="test/per-user"),
    )
    async def per_user(ctx: inngest.Context) -> str:
        await ctx.step.run("work", occupy, ctx, f"user-{ctx.event.data.get('user')}")
        return "done"

    async def mark(ctx: inngest.Context, what: str) -> None:
        rec.hit(key(ctx, what))

    @client.create_function(
        fn_id="big-only",
        trigger=inngest.TriggerEvent(event="test/number", expression="event.data.n > 1.5"),
    )
    async def big_only(ctx: inngest.Context) -> Any:
        return ctx.event.data.get("n")

    @client.create_function(
        fn_id="stoppable",
        cancel=[inngest.Cancel(event="test/stop", if_exp="async.data.job == event.data.job")],
        trigger=inngest.TriggerEvent(event="test/stoppable"),
    )
    async def stoppable(ctx: inngest.Context) -> str:
        await ctx.step.run("work", occupy, ctx, "stoppable")
        await ctx.step.run("after", mark, ctx, "after")
        return "finished"

    @client.create_function(
        fn_id="rate-limited",
        rate_limit=inngest.RateLimit(limit=1, period=timedelta(minutes=1), key="event.data.user"),
        trigger=inngest.TriggerEvent(event="test/rate-limited"),
    )
    async def rate_limited(ctx: inngest.Context) -> Any:
        return ctx.event.data.get("n")

    @client.create_function(
        fn_id="throttled",
        throttle=inngest.Throttle(limit=1, period=timedelta(seconds=1), burst=None),
        trigger=inngest.TriggerEvent(event="test/throttled"),
    )
    async def throttled(ctx: inngest.Context) -> Any:
        await ctx.step.run("work", mark, ctx, "work")
        return ctx.event.data.get("n")

    @client.create_function(
        fn_id="debounced",
        debounce=inngest.Debounce(period=timedelta(seconds=1), key="event.data.user"),
        trigger=inngest.TriggerEvent(event="test/debounced"),
    )
    async def debounced(ctx: inngest.Context) -> Any:
        return ctx.event.data.get("n")

    @client.create_function(
        fn_id="idempotent",
        idempotency="event.data.order",
        trigger=inngest.TriggerEvent(event="test/idempotent"),
    )
    async def idempotent(ctx: inngest.Context) -> Any:
        return ctx.event.data.get("n")

    app = fastapi.FastAPI()
    inngest.fast_api.serve(
        app,
        client,
        [
            *(seq, flaky, nonretriable, doomed, caught, parallel, napper, retry_after, waiter),
            *(slow, limited, per_user, inferrer, big_only, stoppable, rate_limited),
            *(throttled, debounced, idempotent),
        ],
        streaming=inngest.Streaming.FORCE if streaming else None,
    )
    return app, client, rec
