"""Inngest request signing: the one algorithm both sides of a call must agree on.

Inngest signs every call to an app with ``X-Inngest-Signature: t=<unix s>&s=<hex>``:
HMAC-SHA256 keyed by the signing key without its ``signkey-<env>-`` prefix (the remaining
hex *text* as UTF-8 bytes), over the JCS-canonical (RFC 8785) JSON body followed by the
decimal ``t``. The app signs its answers the same way over the raw response bytes. Calls
from an app to the Inngest API carry ``Authorization: Bearer <sha256 of the hex-decoded
key>`` instead.

This module is pure (no I/O, no clock unless asked) so that tripkit's API can check
signatures with the 5-minute replay window that inngest 0.5.x lacks, and the local
executor can sign exactly as Inngest does. Keys never appear in messages.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import urllib.parse

import jcs

from tripkit.errors import TripkitError

HEADER = "X-Inngest-Signature"
DEFAULT_MAX_AGE = 300  # seconds; the SDK spec's SHOULD, absent from inngest 0.5.x

_PREFIX = re.compile(r"^signkey-\w+-")


class SignatureError(TripkitError):
    """A signature is missing, malformed, stale or made with another key."""

    remedy = (
        "Check that INNGEST_SIGNING_KEY is the same on both sides (the app and Inngest) and "
        "that the clocks agree."
    )


def strip_prefix(key: str) -> str:
    """``signkey-prod-abc`` -> ``abc``: the part that actually keys the HMAC."""
    match = _PREFIX.match(key)
    return key[match.end() :] if match else key


def bearer_token(key: str) -> str:
    """The ``Authorization: Bearer`` value an app sends to the Inngest API for ``key``."""
    try:
        raw = bytes.fromhex(strip_prefix(key))
    except ValueError:
        raise SignatureError("The signing key is not hexadecimal after its prefix.") from None
    return hashlib.sha256(raw).hexdigest()


def canonical(body: bytes | object) -> bytes:
    """RFC 8785 bytes of a JSON body (already-encoded bytes are parsed first).

    An empty body stays empty, as the SDK treats it.
    """
    if isinstance(body, bytes | bytearray):
        if not body:
            return b""
        try:
            body = json.loads(body)
        except ValueError:
            raise SignatureError("The signed body is not JSON.") from None
    out = jcs.canonicalize(body)
    assert isinstance(out, bytes)
    return out


def _mac(payload: bytes, key: str, t: int) -> str:
    mac = hmac.new(strip_prefix(key).encode("utf-8"), payload, hashlib.sha256)
    mac.update(str(t).encode("utf-8"))
    return mac.hexdigest()


def sign(body: bytes | object, key: str, t: int | None = None, *, canonicalize: bool = True) -> str:
    """The ``X-Inngest-Signature`` value for ``body`` at unix time ``t`` (default: now).

    Requests are signed over their canonical JSON (``canonicalize=True``); responses over
    their raw bytes (``canonicalize=False``, ``body`` must then be bytes).
    """
    if t is None:
        t = int(time.time())
    payload = canonical(body) if canonicalize else _raw(body)
    return f"t={t}&s={_mac(payload, key, t)}"


def parse_header(header: str) -> tuple[int, str]:
    """Split ``t=<int>&s=<hex>``; raise :class:`SignatureError` when malformed."""
    fields = urllib.parse.parse_qs(header, keep_blank_values=True)
    t_values, s_values = fields.get("t"), fields.get("s")
    if not t_values or not s_values or not s_values[0]:
        raise SignatureError(f"The {HEADER} header is malformed (expected t=<unix>&s=<hex>).")
    try:
        t = int(t_values[0])
    except ValueError:
        raise SignatureError(f"The {HEADER} header has a non-integer timestamp.") from None
    return t, s_values[0]


def verify(
    header: str | None,
    body: bytes | object,
    key: str,
    *,
    fallback: str | None = None,
    now: int | None = None,
    max_age: int | None = DEFAULT_MAX_AGE,
    canonicalize: bool = True,
) -> str:
    """Check a signature; return the key that matched (``key`` or ``fallback``).

    Raises :class:`SignatureError` if the header is missing or malformed, the timestamp is
    more than ``max_age`` seconds away from ``now`` (``None`` disables the window, like
    inngest 0.5.x), or neither key produced the signature. Comparison is constant-time.
    """
    if not header:
        raise SignatureError(f"The request has no {HEADER} header.")
    t, signature = parse_header(header)
    if max_age is not None:
        current = int(time.time()) if now is None else now
        if abs(current - t) > max_age:
            raise SignatureError(
                f"The signature is {abs(current - t)} s old; at most {max_age} s is accepted "
                "(a replayed request, or a clock out of sync)."
            )
    payload = canonical(body) if canonicalize else _raw(body)
    for candidate in (key, fallback):
        if candidate and hmac.compare_digest(signature, _mac(payload, candidate, t)):
            return candidate
    raise SignatureError("The signature does not match the body with the configured key.")


def _raw(body: bytes | object) -> bytes:
    if not isinstance(body, bytes | bytearray):
        raise TypeError("raw (non-canonical) signing needs the exact body bytes")
    return bytes(body)
