"""Every Redis key name tripkit writes, in one place.

Session ids are validated here, before they can become part of a key: a malformed id
(wildcards, slashes, huge strings) is an :class:`InvalidSessionId`, never a Redis call.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from tripkit.errors import InvalidSessionId

#: 16 random bytes = 128 bits, as 32 lowercase hex characters.
SESSION_ID_BYTES = 16
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")


def new_session_id() -> str:
    """A fresh session id with 128 bits from the OS's CSPRNG."""
    return secrets.token_hex(SESSION_ID_BYTES)


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` if tripkit could have issued it, else raise."""
    if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
        shown = repr(session_id)[:40] if isinstance(session_id, str) else type(session_id).__name__
        raise InvalidSessionId(f"Malformed session id {shown}.")
    return session_id


def session_key(prefix: str, session_id: str) -> str:
    """The one key that holds a session's whole document."""
    return f"{prefix}:session:{validate_session_id(session_id)}"


def run_key(prefix: str, session_id: str) -> str:
    """The worker's record of the generation run for a session (timings, usage)."""
    return f"{prefix}:run:{validate_session_id(session_id)}"


def events_channel(prefix: str) -> str:
    """The one pub/sub channel every session write is announced on (see
    :mod:`tripkit.push` for why one channel for all sessions, not one per session)."""
    return f"{prefix}:events"


def idempotency_key(prefix: str, key: str) -> str:
    """Which session an ``Idempotency-Key`` request header started. The client's key is
    hashed: any printable text of any length becomes a short, safe key name."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"{prefix}:idempotency:{digest}"


def pattern(prefix: str) -> str:
    """A SCAN pattern matching every key tripkit writes under ``prefix``."""
    return f"{prefix}:*"
