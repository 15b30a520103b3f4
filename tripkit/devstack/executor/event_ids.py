"""Event ids from the ``x-inngest-event-id-seed`` header, as Inngest's event API makes them.

The SDK sends ``"<unix ms>,<base64 of 10 random bytes>"`` once per ``send()`` and the
same value on each of its retries. The server adds the event's 1-based index in the
request to the last four entropy bytes (big-endian, wrapping) and builds a ULID of the
time and entropy, so a retried send yields the same ids and is deduplicated.
"""

from __future__ import annotations

import base64
import binascii

from tripkit.devstack.executor.records import ulid_from


def seeded_event_id(seed: str, index: int) -> str | None:
    """The ULID for event ``index`` of a send with ``seed``; None if the seed is malformed
    (Inngest then falls back to a random id)."""
    millis_text, sep, entropy_text = seed.partition(",")
    if not sep:
        return None
    try:
        millis = int(millis_text)
        entropy = bytearray(base64.b64decode(entropy_text, validate=True))
    except (ValueError, binascii.Error):
        return None
    if millis <= 0 or millis >= 2**48 or len(entropy) != 10:
        return None
    counter = (int.from_bytes(entropy[6:10], "big") + index) % 2**32
    entropy[6:10] = counter.to_bytes(4, "big")
    return ulid_from(millis, bytes(entropy))
