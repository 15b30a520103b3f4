"""The session store: each operation is one Redis command.

Layout: one string key per session (see :mod:`tripkit.keys`) holding the whole session
as JSON. That choice is what makes every operation a single command:

- ``create``: ``SET key doc NX EX ttl``  (never overwrites an existing id)
- ``get`` (a poll): ``GET key``
- each write: one ``EVAL`` of :data:`WRITE_UNLESS_FINAL`, which swaps the document in
  with ``SET key doc XX GET EX ttl`` and puts the old one back if it was final
  (completed, failed or cancelled) with another status. So an expired or unknown
  session is never resurrected, the TTL is refreshed on every write, and a run that is
  still streaming when its session is cancelled can never overwrite the ``cancelled``
  status. Then ``PUBLISH`` of the events the write added (see :mod:`tripkit.events`) on
  the one channel push clients follow (:mod:`tripkit.push`). Upstash bills a script as 1
  plus each ``redis.call`` inside it: 3 per write with its ``PUBLISH``; a refused write
  costs 3 and publishes nothing. (WATCH/MULTI, the other way to check and set, does not
  exist over REST.)

Writes replace the document the writer computed from the session it last saw, so a
session has one writer at a time: the generation run (its steps run one after the
other). The one other writer, a cancel, passes the document it read and the script
refuses if anything changed meanwhile (then it reads again). Retried writes are
idempotent because the transitions in :mod:`tripkit.sessions` are: writing summary #3
twice leaves one summary #3. The worker's run record (timings, attempts, tokens) is one
more key per session, written once per run with ``SET ... EX ttl``, so it expires with
the session. A request with an ``Idempotency-Key`` creates its session and the key's
record in one script (:data:`CREATE_ONCE`), so a burst of repeats finds one session.

The ``PUBLISH`` follows the write (not in one pipeline): an expired session announces
nothing, and a failed ``PUBLISH`` fails the write, so the step that wrote is retried and
announces again; push clients drop the events they already have, by id.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError

from tripkit import events, keys, sessions
from tripkit.config import Settings
from tripkit.errors import IdempotencyKeyReused, SessionNotFound, StoreError
from tripkit.models import (
    FINAL_STATUSES,
    Bundle,
    IdempotencyRecord,
    Preferences,
    RunRecord,
    Session,
    Status,
    Summary,
)
from tripkit.sessions import SessionClosed
from tripkit.transport import Transport, connect

#: KEYS[1] the session; ARGV[1] the new document, ARGV[2] the TTL, ARGV[3] the document
#: the writer read ("" for any), ARGV[4..] the final statuses. A final document is kept
#: unless the new one has the same status (a retried step repeats its write). Replies 1
#: when written, nil when the session does not exist, else the document it kept. Only
#: a session's own ``"status":"..."`` matches: quotes inside string values are escaped.
WRITE_UNLESS_FINAL = """
local old = redis.call('SET', KEYS[1], ARGV[1], 'XX', 'GET', 'EX', ARGV[2])
if not old then return nil end
local keep = ARGV[3] ~= '' and old ~= ARGV[3]
local was = string.match(old, '"status":"(%a+)"')
if was ~= string.match(ARGV[1], '"status":"(%a+)"') then
  for i = 4, #ARGV do
    if was == ARGV[i] then keep = true end
  end
end
if keep then
  redis.call('SET', KEYS[1], old, 'KEEPTTL')
  return old
end
return 1
"""

#: KEYS[1] the idempotency key, KEYS[2] the new session; ARGV[1] the key's record,
#: ARGV[2] the session, ARGV[3] the TTL. Replies nil when it created both, else the
#: record stored under the key (its session was created with it, by an earlier call).
CREATE_ONCE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[3]) then
  redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', ARGV[3])
  return nil
end
return redis.call('GET', KEYS[1])
"""
_FINAL = sorted(status.value for status in FINAL_STATUSES)


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

    async def create_once(self, preferences: Preferences, key: str) -> tuple[Session, bool]:
        """The session an ``Idempotency-Key`` names: a new one (``True``) the first time,
        the same one (``False``) for every repeat with the same preferences, for ``ttl``
        seconds. A repeat with other preferences raises :class:`IdempotencyKeyReused`.
        One ``EVAL`` (3 billed commands), plus a ``GET`` of the session for a repeat."""
        session = sessions.new(keys.new_session_id(), preferences)
        record = IdempotencyRecord.of(session.session_id, preferences)
        reply = await self.transport.execute(
            "EVAL",
            CREATE_ONCE,
            2,
            keys.idempotency_key(self.prefix, key),
            self.key(session.session_id),
            record.model_dump_json(by_alias=True),
            sessions.encode(session),
            self.ttl,
        )
        if reply is None:
            return session, True
        if not isinstance(reply, bytes):
            raise StoreError("The idempotency script returned an unexpected reply.")
        try:
            first = IdempotencyRecord.model_validate_json(reply)
        except ValidationError:
            raise StoreError(
                "An idempotency record in Redis is corrupt.",
                remedy="Check that nothing else writes under the tripkit: key prefix "
                "(TRIPKIT_KEY_PREFIX).",
            ) from None
        if first.fingerprint != record.fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was already used with different preferences "
                f"(for session {first.session_id})."
            )
        return await self.get(first.session_id), False

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

    async def _write(self, session: Session, expected: bytes = b"") -> bytes | None:
        """Write ``session`` unless the stored one is final (or, given ``expected``,
        differs from it). ``None`` when written, else the document Redis kept."""
        doc = sessions.encode(session)
        # Writing the same document again is harmless, so a lost reply may be retried;
        # a retry that finds its own earlier write (a CAS that lost its reply) counts.
        reply = await self.transport.execute(
            "EVAL",
            WRITE_UNLESS_FINAL,
            1,
            self.key(session.session_id),
            doc,
            self.ttl,
            expected,
            *_FINAL,
            retry_safe=True,
        )
        if reply is None:
            raise SessionNotFound(
                f"Session {session.session_id} no longer exists (expired or unknown); "
                "the write was not applied."
            )
        if reply == 1 or reply == doc:
            return None
        if not isinstance(reply, bytes):
            raise StoreError("The session write script returned an unexpected reply.")
        return reply

    async def _replace(self, session: Session, previous: Session | None = None) -> Session:
        """Write ``session`` over ``previous`` (what the writer last saw) and announce
        what changed (without ``previous`` every event is announced again); raises
        :class:`SessionClosed` (with the stored session) when the session was finished
        meanwhile, e.g. cancelled."""
        kept = await self._write(session)
        if kept is not None:
            raise SessionClosed(sessions.decode(kept))
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

    async def cancel(self, session_id: str, reason: str) -> tuple[Session, bool]:
        """Cancel a session that has not finished: the session and ``True``, or the
        already final session and ``False``. A ``GET``, an ``EVAL`` and the ``PUBLISH``
        (4 billed commands); again if the run wrote in between, so nothing it wrote is
        lost."""
        raw = await self.get_raw(session_id)
        for _ in range(10):
            current = sessions.decode(raw)
            if current.is_final:
                return current, False
            cancelled = sessions.cancel(current, reason)
            kept = await self._write(cancelled, expected=raw)
            if kept is None:
                await self._announce(current, cancelled)
                return cancelled, True
            raw = kept
        raise StoreError(f"Session {session_id} kept changing; the cancel was not applied.")

    async def mark_running(self, session: Session) -> Session:
        """Mark running the session stored as ``session``. The run's first step passes
        the queued document it rebuilt from its start event, so it need not read it:
        one ``EVAL`` (with its ``SET``) and the ``PUBLISH``, as every write. If Redis
        holds another document (a retried step finds its own earlier writes, a cancel
        landed first), the script keeps that one and the run goes on from it: a running
        session as it is, a failed or cancelled one raises :class:`SessionClosed`, an
        expired one :class:`SessionNotFound`."""
        expected = sessions.encode(session)
        for _ in range(10):
            running = sessions.start(session)
            kept = await self._write(running, expected=expected)
            if kept is None:
                await self._announce(session, running)
                return running
            session = sessions.decode(kept)
            if session.status is not Status.QUEUED:
                return sessions.start(session)
            expected = kept
        raise StoreError(f"Session {session.session_id} kept changing; it was not started.")

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
        """Mark failed, unless it is final already (then the session as it is). Given
        only an id (an ``on_failure`` handler has no session at hand) it reads first:
        2 commands, on a path that runs once per failed run."""
        current = await self.get(session) if isinstance(session, str) else session
        if current.is_final:
            return current
        try:
            return await self._replace(sessions.fail(current, error), current)
        except SessionClosed as closed:
            return closed.session
