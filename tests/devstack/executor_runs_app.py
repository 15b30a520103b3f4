"""A second sample app served by the REAL inngest SDK: run mechanics Inngest offers.

step.invoke, sleep_until, parallel steps in race mode, timeouts, cron, batch_events and
the failure event. Kept apart from executor_sample_app.py so that each app's functions
stay few; side effects go to a :class:`Recorder` (see executor_sample_app.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import fastapi
import inngest
import inngest.fast_api

APP_ID = "exec-runs"
CRON = "* * * * *"


def build_app(*, api_base_url: str, rec: Any) -> fastapi.FastAPI:
    """The app (dev mode) with its functions; ``rec`` is a Recorder."""
    client = inngest.Inngest(
        app_id=APP_ID,
        is_production=False,
        api_base_url=api_base_url,
        event_api_base_url=api_base_url,
    )

    def seconds(ctx: inngest.Context, default: float) -> float:
        value = ctx.event.data.get("seconds", default)
        return float(value) if isinstance(value, int | float) else default

    @client.create_function(
        fn_id="child", retries=0, trigger=inngest.TriggerEvent(event="runs/child")
    )
    async def child(ctx: inngest.Context) -> dict[str, Any]:
        async def work() -> int:
            rec.hit(f"child:{ctx.event.data.get('tag')}")
            await asyncio.sleep(seconds(ctx, 0))
            if ctx.event.data.get("fail"):
                raise ValueError(f"child refused {ctx.event.data.get('n')}")
            n = ctx.event.data.get("n")
            return int(n) * 2 if isinstance(n, int) else 0

        doubled = await ctx.step.run("work", work)
        return {"doubled": doubled, "event": ctx.event.name}

    @client.create_function(fn_id="parent", trigger=inngest.TriggerEvent(event="runs/parent"))
    async def parent(ctx: inngest.Context) -> dict[str, Any]:
        data = dict(ctx.event.data)
        timeout = data.pop("timeout", None)
        try:
            result = await ctx.step.invoke(
                "call-child",
                function=child,
                data=data,
                timeout=dt.timedelta(seconds=timeout) if isinstance(timeout, int) else None,
            )
        except inngest.StepError as err:
            return {"error": err.name, "message": err.message}
        return {"result": result}

    @client.create_function(fn_id="alarm", trigger=inngest.TriggerEvent(event="runs/alarm"))
    async def alarm(ctx: inngest.Context) -> dict[str, float]:
        async def now() -> float:
            return dt.datetime.now(dt.UTC).timestamp()

        at = ctx.event.data["at"]
        assert isinstance(at, int | float)
        wake = dt.datetime.fromtimestamp(at, dt.UTC)
        await ctx.step.sleep_until("until", wake)
        return {"woke": await ctx.step.run("woke", now)}

    @client.create_function(fn_id="racer", trigger=inngest.TriggerEvent(event="runs/race"))
    async def racer(ctx: inngest.Context) -> str:
        ev = ctx.event.id

        async def mark(name: str, pause: float) -> str:
            rec.hit(f"{ev}:{name}.start")
            await asyncio.sleep(pause)
            rec.hit(f"{ev}:{name}.end")
            return name

        async def quick_branch() -> str:
            await ctx.step.run("a1", mark, "a1", 0.05)
            return await ctx.step.run("a2", mark, "a2", 0.05)

        async def slow_branch() -> str:
            return await ctx.step.run("b1", mark, "b1", 1.5)

        done = await ctx.group.parallel(
            (quick_branch, slow_branch), parallel_mode=inngest.ParallelMode.RACE
        )
        return "+".join(done)

    @client.create_function(
        fn_id="hog",
        concurrency=[inngest.Concurrency(limit=1)],
        timeouts=inngest.Timeouts(start=dt.timedelta(seconds=1)),
        trigger=inngest.TriggerEvent(event="runs/hog"),
    )
    async def hog(ctx: inngest.Context) -> str:
        async def hold() -> None:
            rec.hit(f"{ctx.event.id}:hold")
            await asyncio.sleep(seconds(ctx, 0))

        await ctx.step.run("hold", hold)
        return "held"

    @client.create_function(
        fn_id="overrun",
        retries=0,
        timeouts=inngest.Timeouts(finish=dt.timedelta(seconds=1)),
        trigger=inngest.TriggerEvent(event="runs/overrun"),
    )
    async def overrun(ctx: inngest.Context) -> str:
        async def step(name: str) -> None:
            rec.hit(f"{ctx.event.id}:{name}.start")
            await asyncio.sleep(seconds(ctx, 0))
            rec.hit(f"{ctx.event.id}:{name}.end")

        await ctx.step.run("first", step, "first")
        await ctx.step.run("second", step, "second")
        return "finished"

    async def on_cancelled(ctx: inngest.Context) -> None:
        rec.cancelled.append(dict(ctx.event.data))

    @client.create_function(
        fn_id="cancel-watch",
        trigger=inngest.TriggerEvent(event="inngest/function.cancelled"),
    )
    async def cancel_watch(ctx: inngest.Context) -> None:
        await on_cancelled(ctx)

    @client.create_function(fn_id="ticker", trigger=inngest.TriggerCron(cron=CRON))
    async def ticker(ctx: inngest.Context) -> dict[str, Any]:
        rec.hit("ticker")
        return {"name": ctx.event.name, "data": dict(ctx.event.data)}

    @client.create_function(
        fn_id="bundler",
        batch_events=inngest.Batch(max_size=3, timeout=dt.timedelta(seconds=1)),
        trigger=inngest.TriggerEvent(event="runs/bundle"),
    )
    async def bundler(ctx: inngest.Context) -> dict[str, Any]:
        return {"ns": [e.data.get("n") for e in ctx.events], "first": ctx.event.data.get("n")}

    @client.create_function(
        fn_id="per-user-bundler",
        batch_events=inngest.Batch(
            max_size=2,
            timeout=dt.timedelta(seconds=1),
            key="event.data.user",
            if_exp="event.data.vip != true",
        ),
        trigger=inngest.TriggerEvent(event="runs/user-bundle"),
    )
    async def per_user_bundler(ctx: inngest.Context) -> list[Any]:
        return [e.data.get("n") for e in ctx.events]

    async def record_failure(ctx: inngest.Context) -> None:
        rec.failures.append(dict(ctx.event.data))

    @client.create_function(
        fn_id="breaks",
        retries=0,
        on_failure=record_failure,
        trigger=inngest.TriggerEvent(event="runs/breaks"),
    )
    async def breaks(ctx: inngest.Context) -> None:
        raise ValueError(f"broken {ctx.event.data.get('n')}")

    app = fastapi.FastAPI()
    inngest.fast_api.serve(
        app,
        client,
        [
            *(child, parent, alarm, racer, hog, overrun, cancel_watch, ticker, bundler),
            *(per_user_bundler, breaks),
        ],
    )
    return app
