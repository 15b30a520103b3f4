"""tripkit.signing must agree bit for bit with the inngest SDK's own signing and checks."""

from __future__ import annotations

import json
import time

import pytest
from inngest._internal import net, server_lib, transforms

from tripkit import signing

KEY = "signkey-prod-" + "0f1e2d3c4b5a6978" * 4
OTHER = "signkey-prod-" + "8796a5b4c3d2e1f0" * 4
BODY = {"event": {"name": "trips/bundles.requested", "data": {"é": 1.5, "b": [1, 2]}}, "a": None}


def sdk_accepts(header: str, body: bytes, key: str = KEY, fallback: str | None = None) -> bool:
    """The SDK's own request check, as a production app runs it."""
    result = net.validate_request_sig(
        body=body,
        headers={server_lib.HeaderKey.SIGNATURE.value: header},
        mode=server_lib.ServerKind.CLOUD,
        signing_key=key,
        signing_key_fallback=fallback,
    )
    return isinstance(result, str)


def test_requests_signed_by_tripkit_pass_the_sdk_check() -> None:
    compact = json.dumps(BODY, separators=(",", ":")).encode()
    spaced = json.dumps(BODY, indent=2, sort_keys=True).encode()
    header = signing.sign(compact, KEY)
    assert header.startswith("t=") and "&s=" in header
    # Signed over the canonical form: any equivalent encoding of the body verifies.
    assert sdk_accepts(header, compact) and sdk_accepts(header, spaced)
    assert sdk_accepts(signing.sign(BODY, KEY), compact)  # an object is encoded canonically
    assert not sdk_accepts(header, compact, key=OTHER)
    assert sdk_accepts(header, compact, key=OTHER, fallback=KEY)
    tampered = json.dumps({**BODY, "a": 1}).encode()
    assert not sdk_accepts(header, tampered)


def test_empty_body_like_a_sync_put() -> None:
    assert sdk_accepts(signing.sign(b"", KEY), b"")


def test_sdk_signatures_pass_tripkit_verify() -> None:
    body = json.dumps(BODY).encode()
    request_header = net.sign_request(body, KEY)
    assert isinstance(request_header, str)
    assert signing.verify(request_header, body, KEY) == KEY
    response_header = net.sign_response(body, KEY)
    assert isinstance(response_header, str)
    assert signing.verify(response_header, body, KEY, canonicalize=False) == KEY
    assert signing.verify(response_header, body, OTHER, fallback=KEY, canonicalize=False) == KEY
    with pytest.raises(signing.SignatureError):
        signing.verify(response_header, body + b" ", KEY, canonicalize=False)


def test_same_header_as_the_sdk_for_the_same_time() -> None:
    body = json.dumps(BODY).encode()
    assert signing.sign(body, KEY, 1_700_000_000) == net.sign_request(body, KEY, 1_700_000_000)
    assert signing.sign(body, KEY, 1_700_000_000, canonicalize=False) == net.sign_response(
        body, KEY, 1_700_000_000
    )


def test_replay_window() -> None:
    body = json.dumps(BODY).encode()
    now = int(time.time())
    old = signing.sign(body, KEY, now - 301)
    with pytest.raises(signing.SignatureError, match="301 s old"):
        signing.verify(old, body, KEY, now=now)
    assert signing.verify(old, body, KEY, now=now, max_age=None) == KEY
    assert signing.verify(signing.sign(body, KEY, now - 299), body, KEY, now=now) == KEY
    future = signing.sign(body, KEY, now + 301)
    with pytest.raises(signing.SignatureError):
        signing.verify(future, body, KEY, now=now)
    assert sdk_accepts(old, body)  # inngest 0.5.x itself has no window: hence ours


@pytest.mark.parametrize("header", [None, "", "t=1", "s=abc", "t=x&s=abc", "garbage"])
def test_missing_or_malformed_header(header: str | None) -> None:
    with pytest.raises(signing.SignatureError):
        signing.verify(header, b"{}", KEY)


def test_wrong_key_message_does_not_leak_keys() -> None:
    body = b'{"a": 1}'
    with pytest.raises(signing.SignatureError) as caught:
        signing.verify(signing.sign(body, OTHER), body, KEY)
    assert signing.strip_prefix(KEY) not in str(caught.value)
    assert signing.strip_prefix(OTHER) not in str(caught.value)


def test_key_helpers_match_the_sdk() -> None:
    assert signing.strip_prefix(KEY) == transforms.remove_signing_key_prefix(KEY)
    assert signing.strip_prefix("signkey-branch-abcd") == "abcd"
    assert signing.strip_prefix("abcd") == "abcd"
    assert signing.bearer_token(KEY) == transforms.hash_signing_key(KEY)
    with pytest.raises(signing.SignatureError):
        signing.bearer_token("signkey-prod-not-hex")


def test_non_json_body_is_refused() -> None:
    with pytest.raises(signing.SignatureError):
        signing.sign(b"not json", KEY)
