"""Whether a configured endpoint is one the deployed app can reach.

Checked on the URL's text, without DNS: a real setup names Upstash, Inngest Cloud and
OpenAI by public host names, so a loopback or private address there means the values
are a local stack's (``tripkit dev``) or a leftover, and every check of that service
would measure the wrong thing.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Literal

Reach = Literal["local", "private", "public"]

#: Host names that always mean this machine or its own network.
_LOCAL_NAMES = ("localhost",)
_LOCAL_SUFFIXES = (".localhost", ".local")
#: Names that resolve only inside a private network (Docker, cloud VPCs).
_PRIVATE_SUFFIXES = (".internal", ".lan", ".home.arpa")


def reach(url: str) -> Reach:
    """``local``: this machine (loopback, 0.0.0.0, localhost, *.local, link-local);
    ``private``: a private network (10/8, 172.16/12, 192.168/16, fc00::/7, *.internal);
    ``public``: anything else, including a URL that does not parse."""
    try:
        host = (urllib.parse.urlsplit(url.strip()).hostname or "").rstrip(".").lower()
    except ValueError:
        return "public"
    if not host:
        return "public"
    if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES):
        return "local"
    if host.endswith(_PRIVATE_SUFFIXES):
        return "private"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "public"
    if address.is_loopback or address.is_unspecified or address.is_link_local:
        return "local"
    if address.is_private:
        return "private"
    return "public"


def host_of(url: str) -> str:
    """The host (and port) to name in a detail: no scheme, path or credentials."""
    try:
        return urllib.parse.urlsplit(url.strip()).netloc.rsplit("@", 1)[-1] or url
    except ValueError:
        return url
