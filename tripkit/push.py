"""One Redis subscription per app process, shared by every push client it serves.

Every session write is announced on one channel (:func:`tripkit.keys.events_channel`);
the :class:`PushHub` holds the process's only subscription to it and hands each
announcement to the :class:`Listener` of each client following that session. Why one
channel for all sessions rather than one per session: Upstash's REST API subscribes one
channel per HTTP stream, so per-session channels would cost a stream (and a billed
``SUBSCRIBE``) per followed session, where one channel costs one stream and one
``SUBSCRIBE`` per process whatever the number of clients; over RESP one connection
could multiplex per-session channels, but each follow would still pay a ``SUBSCRIBE``
and an ``UNSUBSCRIBE``. The price is that every process receives every session's
announcements: a few small messages per generation, dropped unread (the session id
comes first) when nobody follows that session.

The subscription opens with the first listener and closes with the last. When it is
lost (Redis restarted, a connection cut), the hub subscribes again with backoff and then
tells every listener that was live to re-read its session (:data:`RESYNC`): pub/sub keeps
no history, the session document does. A listener registers before its client reads the
document, and :meth:`PushHub.listen` returns only once the subscription is confirmed, so
an announcement made between that read and the first live message waits in the
listener's queue instead of being lost; :class:`tripkit.events.Cursor` drops what the
read already returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from tripkit import events
from tripkit.errors import RedisUnavailable, SessionNotFound, StoreError
from tripkit.events import Cursor, SessionEvent
from tripkit.models import Session
from tripkit.transport import Subscription

log = logging.getLogger("tripkit.push")


class _Resync:
    """Re-read the session: announcements may have been missed."""

    def __repr__(self) -> str:
        return "RESYNC"


RESYNC: Final = _Resync()
Item = list[SessionEvent] | _Resync

#: Announcements a listener may hold unread before it is told to re-read instead.
QUEUE_SIZE = 64


class Listener:
    """One client's share of the hub: the announcements of one session, in order."""

    def __init__(self, hub: PushHub, session_id: str) -> None:
        self.hub = hub
        self.session_id = session_id
        self._queue: asyncio.Queue[Item] = asyncio.Queue(QUEUE_SIZE)
        #: Registered while the subscription was up, so a gap in it concerns us.
        self.live = False
        self.closed = False

    def put(self, item: Item) -> None:
        if self._queue.full():
            # A client too slow to keep up: drop what it holds, it re-reads the document.
            while not self._queue.empty():
                self._queue.get_nowait()
            item = RESYNC
        self._queue.put_nowait(item)

    async def get(self) -> Item:
        """The next announcement's events, or :data:`RESYNC`."""
        return await self._queue.get()

    def close(self) -> None:
        """Leave the hub (idempotent, synchronous: safe in a cancelled task's cleanup)."""
        if not self.closed:
            self.closed = True
            self.hub._remove(self)


class PushHub:
    """The process's one subscription, fanned out to listeners by session id."""

    def __init__(
        self,
        subscribe: Callable[[], Awaitable[Subscription]],
        *,
        ready_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        self._subscribe = subscribe
        self.ready_timeout = ready_timeout
        self.backoff = backoff
        self._listeners: dict[str, set[Listener]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._error: StoreError | None = None
        #: Subscriptions made since the start (the first, and each one after a loss).
        self.subscriptions = 0

    @property
    def listener_count(self) -> int:
        return sum(len(group) for group in self._listeners.values())

    @property
    def subscribed(self) -> bool:
        return self._ready is not None and self._ready.is_set()

    @property
    def running(self) -> bool:
        """The task that holds the subscription exists (it ends with the last listener)."""
        return self._task is not None

    async def listen(self, session_id: str) -> Listener:
        """A listener for ``session_id``, returned once the subscription is confirmed;
        the caller reads the session after this and must :meth:`Listener.close` it.
        Raises :class:`StoreError` when Redis cannot be subscribed to in time."""
        listener = Listener(self, session_id)
        self._listeners.setdefault(session_id, set()).add(listener)
        if self._task is None:
            self._ready = asyncio.Event()
            self._error = None
            self._task = asyncio.create_task(self._run(self._ready), name="tripkit-push-hub")
        ready = self._ready
        assert ready is not None
        try:
            async with asyncio.timeout(self.ready_timeout):
                await ready.wait()
        except TimeoutError:
            listener.close()
            cause = f": {self._error.message}" if self._error else ""
            raise RedisUnavailable(f"Could not subscribe to session updates{cause}") from None
        except BaseException:
            listener.close()
            raise
        listener.live = True
        return listener

    def _remove(self, listener: Listener) -> None:
        group = self._listeners.get(listener.session_id)
        if group is not None:
            group.discard(listener)
            if not group:
                del self._listeners[listener.session_id]
        if not self._listeners and self._task is not None:
            self._task.cancel()
            self._task = None
            self._ready = None

    async def _run(self, ready: asyncio.Event) -> None:
        delay = self.backoff[0]
        while True:
            try:
                subscription = await self._subscribe()
            except Exception as exc:
                self._error = exc if isinstance(exc, StoreError) else None
                log.warning("push: cannot subscribe (%s); again in %.1f s", _why(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            self.subscriptions += 1
            since = asyncio.get_running_loop().time()
            try:
                ready.set()
                for group in self._listeners.values():
                    for listener in group:
                        if listener.live:  # it may have missed announcements meanwhile
                            listener.put(RESYNC)
                async for payload in subscription:
                    self._dispatch(payload)
                raise RedisUnavailable("The subscription ended.")
            except Exception as exc:
                self._error = exc if isinstance(exc, StoreError) else None
                log.warning("push: subscription lost (%s); subscribing again", _why(exc))
            finally:
                ready.clear()
                with contextlib.suppress(Exception):
                    await subscription.aclose()
            # A subscription that keeps dropping at once must not become a SUBSCRIBE storm.
            if asyncio.get_running_loop().time() - since > self.backoff[1]:
                delay = self.backoff[0]
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    def _dispatch(self, payload: bytes) -> None:
        group = self._listeners.get(events.notification_session(payload))
        if not group:
            return
        try:
            batch = events.decode_notification(payload)
        except ValueError as exc:
            log.warning("push: ignoring a malformed announcement: %s", exc)
            return
        for listener in list(group):
            listener.put(batch)

    async def aclose(self) -> None:
        """End the subscription (the app's shutdown); listeners left get nothing more."""
        task, self._task = self._task, None
        self._listeners.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class SessionStream:
    """One push client's events: the replay of the session as read, then the live
    announcements, merged by a :class:`~tripkit.events.Cursor`; ends after the final
    event. ``close()`` releases the listener, however the response ends."""

    def __init__(
        self,
        listener: Listener | None,
        read: Callable[[], Awaitable[Session]],
        cursor: Cursor,
        first: Session,
    ) -> None:
        self.listener = listener
        self.read = read
        self.cursor = cursor
        self.first = first

    async def __aiter__(self) -> AsyncIterator[SessionEvent]:
        try:
            for event in self.cursor.fresh(events.derive(self.first)):
                yield event
            while self.listener is not None and not self.cursor.finished:
                item = await self.listener.get()
                if isinstance(item, _Resync):
                    try:
                        item = events.derive(await self.read())
                    except SessionNotFound:
                        return  # expired: nothing more will come
                    except StoreError as exc:
                        # The client reconnects with its last id and resumes from there.
                        log.warning("push: cannot re-read %s (%s)", self.first.session_id, exc)
                        return
                for event in self.cursor.fresh(item):
                    yield event
        finally:
            self.close()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()


async def open_stream(
    hub: PushHub,
    session_id: str,
    read: Callable[[], Awaitable[Session]],
    last_event_id: int | None = None,
) -> SessionStream | None:
    """Subscribe, then read the session: what the client has not seen, then live events.
    ``None`` when the client already has the final event (the endpoint answers 204).
    Raises what ``read`` raises (:class:`SessionNotFound`, ...) and
    :class:`~tripkit.events.InvalidEventId` for an id beyond the session's last."""
    cursor = Cursor(last_event_id)
    listener = await hub.listen(session_id)
    try:
        session = await read()
        cursor.check(session)
    except BaseException:
        listener.close()
        raise
    if session.is_final:  # nothing live to wait for: replay only
        listener.close()
        if cursor.seen_end(session):
            return None
        return SessionStream(None, read, cursor, session)
    return SessionStream(listener, read, cursor, session)


def _why(exc: Exception) -> str:
    return exc.message if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
