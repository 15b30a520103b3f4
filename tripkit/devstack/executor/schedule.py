"""Cron triggers: parsed at sync, fired on their schedule as Inngest fires them.

Inngest reads five-field cron expressions (minute hour day month weekday), the
``@hourly``-style macros, and an optional ``TZ=<zone>`` prefix; each time a schedule is
due, the function gets one run whose event is ``inngest/scheduled.timer`` with
``data.cron``. Times missed while the executor was down are not caught up. croniter
does the calendar arithmetic; the clock is injectable so tests need not wait a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

log = logging.getLogger("tripkit.devstack.executor")

Clock = Callable[[], datetime]
_TZ_PREFIX = re.compile(r"^\s*(?:CRON_)?TZ=(\S+)\s+(.+)$")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CronSchedule:
    """One cron trigger: the expression as registered, its fields and its time zone."""

    expression: str
    fields: str
    zone: tzinfo

    @classmethod
    def parse(cls, text: str) -> CronSchedule:
        """ValueError with what to fix when Inngest would not accept ``text`` either."""
        fields: str = text.strip()
        zone: tzinfo = UTC
        prefixed = _TZ_PREFIX.match(fields)
        if prefixed:
            try:
                zone = ZoneInfo(prefixed.group(1))
            except (ZoneInfoNotFoundError, ValueError):
                zone_name = prefixed.group(1)
                raise ValueError(f"cron {text!r}: unknown time zone {zone_name!r}") from None
            fields = prefixed.group(2).strip()
        if not fields.startswith("@") and len(fields.split()) != 5:
            raise ValueError(
                f"cron {text!r}: expected five fields (minute hour day month weekday), "
                "an @hourly-style macro, and optionally a TZ=<zone> prefix"
            )
        if not croniter.is_valid(fields):
            raise ValueError(f"cron {text!r} is not a valid cron expression")
        return cls(text, fields, zone)

    def next_after(self, moment: datetime) -> datetime:
        """The first time strictly after ``moment`` when the schedule fires (UTC)."""
        local = moment.astimezone(self.zone)
        following: datetime = croniter(self.fields, local).get_next(datetime)
        return following.astimezone(UTC)


class CronScheduler:
    """Fires every registered cron trigger when it is due, by the injected ``clock``.

    ``fire(function_id, schedule, due)`` starts the run. The loop sleeps until the next
    due time, at most ``poll`` seconds at a time so that a test clock running faster
    than real time (or a new registration) is noticed.
    """

    def __init__(
        self,
        fire: Callable[[str, CronSchedule, datetime], None],
        clock: Clock = utc_now,
        poll: float = 1.0,
    ) -> None:
        self._fire = fire
        self.clock = clock
        self.poll = poll
        self._due: dict[tuple[str, str], tuple[CronSchedule, datetime]] = {}
        self._task: asyncio.Task[None] | None = None

    def sync(self, schedules: list[tuple[str, CronSchedule]]) -> None:
        """Take the complete set of (function id, schedule) after a registration."""
        now = self.clock()
        due: dict[tuple[str, str], tuple[CronSchedule, datetime]] = {}
        for function_id, schedule in schedules:
            key = (function_id, schedule.expression)
            kept = self._due.get(key)
            due[key] = kept if kept is not None else (schedule, schedule.next_after(now))
        self._due = due
        if due and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="cron")

    def upcoming(self) -> dict[str, str]:
        """``"<function id> <expression>"`` -> next due time (ISO), for /_control/cron."""
        return {f"{fn} {expr}": at.isoformat() for (fn, expr), (_, at) in self._due.items()}

    async def _loop(self) -> None:
        while self._due:
            now = self.clock()
            for key, (schedule, at) in list(self._due.items()):
                if at <= now and self._due.get(key) == (schedule, at):
                    self._due[key] = (schedule, schedule.next_after(now))
                    try:
                        self._fire(key[0], schedule, at)
                    except Exception:  # one bad fire must not stop every schedule
                        log.exception("cron %s for %s could not start a run", key[1], key[0])
            wait = min(((at - now).total_seconds() for _, at in self._due.values()), default=0)
            await asyncio.sleep(max(0.0, min(wait, self.poll)))

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
