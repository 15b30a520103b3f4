"""The session store: each operation is one Redis command.

Layout: one string key per session (see :mod:`tripkit.keys`) holding the whole session
as JSON. That choice is what makes every operation a single command, which Upstash
bills as one:

- ``create``: ``SET key doc NX EX ttl``  (never overwrites an existing id)
- ``get`` (a poll): ``GET key``
- each write: ``SET key doc XX EX ttl``  (only if the session still exists, so an
  expired or unknown session is never resurrected; the TTL is refreshed on every write),
  then ``PUBLISH`` of the events it added (see :mod:`tripkit.events`) on the one
  channel push clients follow (:mod:`tripkit.push`): 2 commands

Writes replace the document the writer computed from the session it last saw, so a
session has one writer at a time: the generation run (its steps run one after the
other). Retried writes are idempotent because the transitions in
:mod:`tripkit.sessions` are: writing summary #3 twice leaves one summary #3.
The worker's run record (timings, attempts, tokens) is one more key per session,
written once per run with ``SET ... EX ttl``, so it expires with the session.

A Lua script could check-and-modify in one round trip, but Upstash bills a script as
one command plus each ``redis.call`` inside it, so it would cost 3 per write.

The ``PUBLISH`` follows the ``SET`` (not in one pipeline): an expired session announces
nothing, and a failed ``PUBLISH`` fails the write, so the step that wrote is retried and
announces again; push clients drop the events they already have, by id.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError

from tripkit import events, keys, sessions
from tripkit.config import Settings
from tripkit.errors import SessionNotFound, StoreError
from tripkit.models import Bundle, Preferences, RunRecord, Session, Status, Summary
from tripkit.transport import Transport, connect


class SessionStore:
    """Create, read and advance sessions in Redis."""

    def __init__(self, transport: Transport, *, ttl: int = 3600, prefix: str = "tripkit") -> None:
        self.transport = transport
        self.ttl = ttl
        self.prefix = prefix

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionStore:
        return cls(connect(settings), ttl=settings.session_ttl, prefix=settings.key_prefix)

    async def __aenter__(self) -> SessionStore:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    def key(self, session_id: str) -> str:
        return keys.session_key(self.prefix, session_id)

    async def create(self, preferences: Preferences) -> Session:
        """A new ``queued`` session with a fresh id, alive for ``ttl`` seconds."""
        session = sessions.new(keys.new_session_id(), preferences)
        reply = await self.transport.execute(
            "SET", self.key(session.session_id), sessions.encode(session), "NX", "EX", self.ttl
        )
        if reply is None:  # 128 random bits collided: practically impossible
            raise StoreError("A session id collided with an existing one; please retry.")
        return session

    async def get(self, session_id: str) -> Session:
        """The session as last written; raises :class:`SessionNotFound`."""
        return sessions.decode(await self.get_raw(session_id))

    async def get_raw(self, session_id: str) -> bytes:
        """The session document as stored, which is the JSON the API serves: a poll
        passes it on without decoding it (see :func:`tripkit.sessions.encode`)."""
        raw = await self.transport.execute("GET", self.key(session_id), retry_safe=True)
        if raw is None:
            raise SessionNotFound(f"Session {session_id} not found.")
        if not isinstance(raw, bytes):
            raise StoreError("GET returned a non-string reply.")
        return raw

    async def _replace(self, session: Session, previous: Session | None = None) -> Session:
        """Write ``session`` over ``previous`` (what the writer last saw) and announce
        what changed; without ``previous`` every event is announced again."""
        # Writing the same document again is harmless, so a lost reply may be retried.
        reply = await self.transport.execute(
            "SET",
            self.key(session.session_id),
            sessions.encode(session),
            "XX",
            "EX",
            self.ttl,
            retry_safe=True,
        )
        if reply is None:
            raise SessionNotFound(
                f"Session {session.session_id} no longer exists (expired or unknown); "
                "the write was not applied."
            )
        await self._announce(previous, session)
        return session

    async def _announce(self, previous: Session | None, session: Session) -> None:
        new = events.announced(previous, session)
        if new:
            # A repeat only repeats events, which clients drop by id: safe to retry.
            await self.transport.execute(
                "PUBLISH",
                keys.events_channel(self.prefix),
                events.encode_notification(session.session_id, new),
                retry_safe=True,
            )

    async def mark_running(self, session: Session) -> Session:
        return await self._replace(sessions.start(session), session)

    async def add_summary(self, session: Session, summary: Summary) -> Session:
        return await self._replace(sessions.add_summary(session, summary), session)

    async def complete(self, session: Session, bundles: Iterable[Bundle]) -> Session:
        return await self._replace(sessions.complete(session, bundles), session)

    async def put_run_record(self, record: RunRecord) -> None:
        """The worker's record of a run (timings, attempts, tokens): one ``SET ... EX``."""
        await self.transport.execute(
            "SET",
            keys.run_key(self.prefix, record.session_id),
            record.model_dump_json(by_alias=True, exclude_none=True),
            "EX",
            self.ttl,
            retry_safe=True,
        )

    async def get_run_record(self, session_id: str) -> RunRecord | None:
        """The run record, or ``None`` while the run has not finished (or after its TTL)."""
        raw = await self.transport.execute(
            "GET", keys.run_key(self.prefix, session_id), retry_safe=True
        )
        if not isinstance(raw, bytes):
            return None
        try:
            return RunRecord.model_validate_json(raw)
        except ValidationError:
            raise StoreError(
                f"The run record of session {session_id} in Redis is corrupt.",
                remedy="Check that nothing else writes under the tripkit: key prefix "
                "(TRIPKIT_KEY_PREFIX).",
            ) from None

    async def fail(self, session: Session | str, error: str) -> Session:
        """Mark failed. Given only an id (an ``on_failure`` handler has no session at
        hand) it reads first: 2 commands, on a path that runs once per failed run."""
        current = await self.get(session) if isinstance(session, str) else session
        if current.status == Status.COMPLETED:
            return current
        return await self._replace(sessions.fail(current, error), current)
