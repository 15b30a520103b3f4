"""The configuration checks: each variable is set, without quotes or spaces, in its
service's format, not a placeholder from the guide and not swapped with another.

They read the raw values (:attr:`Context.values`), so a value that the settings reject is
still reported by name. Each says where its value came from (the environment, or which
dotenv file), never the value of a secret. Checking the real services (not
``local_stack``), an endpoint on this machine fails: the values are then a local stack's
or a leftover export, and the deployed app could not reach them.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterable

from tripkit.checks.core import (
    CONFIGURATION,
    ENVIRONMENT,
    OPENAI_DEFAULT_BASE,
    CheckStatus,
    Context,
    Fail,
    Outcome,
    Run,
    Skip,
    Stop,
    check,
    shape,
)
from tripkit.checks.endpoints import host_of, reach
from tripkit.config import mask_url
from tripkit.errors import ConfigError

_SIGNING_KEY = re.compile(r"^signkey-([A-Za-z0-9]+)-(.*)$")
_PLACEHOLDER = re.compile(
    r"your[_-]|_here\b|changeme|placeholder|example|xxxx|\.\.\.|<|>", re.IGNORECASE
)


def hygiene(name: str, raw: str) -> tuple[str, Outcome | None]:
    """The value without stray quotes/spaces, and a FAIL if it had any."""
    value = raw.strip()
    problems = []
    if value != raw:
        problems.append("has leading or trailing whitespace (a stray space or newline?)")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        problems.append("is wrapped in quotes")
        value = value[1:-1].strip()
    if any(c.isspace() for c in value):
        problems.append("contains whitespace")
    if not problems:
        return value, None
    remedy = (
        f"Set {name} to the value exactly as copied, without quotes or spaces (in .env.local "
        "and in the Vercel project's Environment Variables)."
    )
    return value, (CheckStatus.FAIL, f"{name} {' and '.join(problems)}.", remedy)


def _read(ctx: Context, name: str, unset: Stop) -> str:
    """``name``'s value; the check stops with ``unset`` if it is not set, and fails if the
    value has stray quotes or spaces. What every variable check starts with."""
    raw = ctx.values.get(name)
    if not raw:
        raise unset
    value, bad = hygiene(name, raw)
    if bad:
        raise Stop(*bad)
    return value


def _other(ctx: Context, name: str) -> str:
    """Another variable's value, to compare with (stripped, "" when unset)."""
    return (ctx.values.get(name) or "").strip()


def _no_placeholder(name: str, value: str) -> None:
    if _PLACEHOLDER.search(value):
        raise Fail(
            f"{name} looks like a placeholder from the guide's examples, not a real value "
            f"({shape(value)}).",
            f"Copy the real {name} from the service's console into .env.local and Vercel.",
        )


def _sourced(detail: str, ctx: Context, name: str) -> str:
    """``detail`` and where ``name``'s value came from (or where it was looked for)."""
    detail = detail.rstrip()
    if not detail.endswith((".", ")")):
        detail += "."
    if ctx.values.get(name):
        source = ctx.sources.get(name)
        return f"{detail} Source: {source}." if source else detail
    return f"{detail} Looked in {ctx.searched}." if ctx.searched else detail


def _variable(name: str, title: str) -> Callable[[Run], Run]:
    """Registers the decorated function as the check ``config.<name>``, its detail
    ending with where the value came from."""

    def register(run: Run) -> Run:
        async def sourced(ctx: Context) -> Outcome:
            try:
                status, detail, remedy = await run(ctx)
            except Stop as stop:
                status, detail, remedy = stop.outcome
            return status, _sourced(detail, ctx, name), remedy

        sourced.__module__ = run.__module__
        check(f"config.{name}", CONFIGURATION, title)(sourced)
        return run

    return register


def _is_set(value: str) -> Outcome:
    return CheckStatus.PASS, f"Set ({shape(value)}).", ""


@check("config.settings", CONFIGURATION, "The settings load and are consistent")
async def settings(ctx: Context) -> Outcome:
    if ctx.settings_error is not None or ctx.settings is None:
        error = ctx.settings_error
        detail = error.message if error else "The settings did not load."
        if ctx.cleaned and ctx.settings is not None:
            detail += (
                " The service checks ran with the quotes/spaces removed from "
                + ", ".join(ctx.cleaned)
                + "."
            )
        return CheckStatus.FAIL, detail, error.remedy if error else ""
    s = ctx.settings
    try:
        transport = s.redis_transport_name
    except ConfigError as exc:
        return CheckStatus.FAIL, exc.message, exc.remedy
    if transport == "rest" and (s.upstash_redis_rest_url is None or not s.upstash_redis_rest_token):
        return (
            CheckStatus.FAIL,
            "TRIPKIT_REDIS_TRANSPORT is rest but the Upstash REST URL or token is unset.",
            "Set UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN, or unset "
            "TRIPKIT_REDIS_TRANSPORT.",
        )
    if transport == "resp" and s.redis_url is None:
        return (
            CheckStatus.FAIL,
            "TRIPKIT_REDIS_TRANSPORT is resp but REDIS_URL is unset.",
            "Set REDIS_URL, or unset TRIPKIT_REDIS_TRANSPORT.",
        )
    if not ctx.local_stack and (problem := _endpoints(ctx)) is not None:
        return problem
    redis = "Upstash REST" if transport == "rest" else "REDIS_URL (RESP)"
    mode = "cloud mode (signed)" if s.inngest_signing_key else "dev mode (unsigned)"
    where = s.inngest_base_url or ("Inngest Cloud" if s.inngest_signing_key else "127.0.0.1:8288")
    return (
        CheckStatus.PASS,
        f"Redis via {redis}; Inngest {mode} at {where}; model {s.openai_model}; "
        f"session TTL {s.session_ttl} s.",
        "",
    )


#: The endpoints config.settings looks at (UPSTASH_REDIS_REST_URL has its own check).
_ENDPOINTS = ("INNGEST_BASE_URL", "OPENAI_BASE_URL", "REDIS_URL")


def _endpoints(ctx: Context) -> Outcome | None:
    """Checking the real services: a FAIL naming the endpoints on this machine, a WARN
    naming those on a private network, else None."""
    found: dict[str, list[str]] = {"local": [], "private": []}
    for name in _ENDPOINTS:
        value = (ctx.values.get(name) or "").strip()
        where = reach(value) if value else "public"
        if where != "public":
            found[where].append(name)
    shown = {n: _where(ctx, n, mask_url((ctx.values.get(n) or "").strip())) for n in _ENDPOINTS}
    if local := found["local"]:
        return (
            CheckStatus.FAIL,
            f"Checking the real services, but {_and(shown[n] for n in local)} "
            f"{'points' if len(local) == 1 else 'point'} at this machine: the checks below "
            "would measure a local stack, and the deployed app cannot reach "
            f"{'it' if len(local) == 1 else 'them'}.",
            _local_remedy(ctx, local),
        )
    if private := found["private"]:
        return (
            CheckStatus.WARN,
            f"{_and(shown[n] for n in private)}: a private network address; only a "
            "deployment inside that network reaches it.",
            "Use the services' public endpoints unless the app runs in that network.",
        )
    return None


def _and(items: Iterable[str]) -> str:
    words = list(items)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _dev_server_hint(ctx: Context, instead: str = "") -> str:
    """The local alternative, offered only when the offline stack is what is checked: for
    the real services a local endpoint is itself a failure."""
    if not ctx.local_stack:
        return ""
    return f" For a local Inngest Dev Server set INNGEST_BASE_URL=http://127.0.0.1:8288{instead}."


def _upstash_unset(ctx: Context, name: str, other: str) -> Stop:
    """An unset Upstash REST variable is fine when REDIS_URL replaces the pair."""
    if ctx.values.get("REDIS_URL") and not ctx.values.get(other):
        return Skip("Unset; REDIS_URL is used instead.")
    return Fail(
        f"{name} is not set.",
        f"Copy {name} from the Upstash console (database -> 'REST API') into .env.local and "
        "the Vercel project's Environment Variables.",
    )


@_variable("UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_URL is an https URL")
async def rest_url(ctx: Context) -> Outcome:
    name = "UPSTASH_REDIS_REST_URL"
    value = _read(ctx, name, _upstash_unset(ctx, name, other="UPSTASH_REDIS_REST_TOKEN"))
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (
            CheckStatus.FAIL,
            f"{name} is not an https:// URL ({shape(value)}).",
            "It should look like https://your-db.upstash.io. Are the URL and the token swapped?",
        )
    host = parts.hostname
    _no_placeholder(name, host)
    shown = mask_url(value)
    if not ctx.local_stack:
        _real_endpoint(ctx, name, value, "Upstash")
        if parts.scheme != "https":
            return (
                CheckStatus.FAIL,
                f"{shown} uses plain http; Upstash serves REST over https only, and the "
                "token would travel unencrypted.",
                f"Use https://{host} as the Upstash console shows it (database -> 'REST API').",
            )
    if parts.scheme == "https":
        note = "" if host.endswith(".upstash.io") else " (not an upstash.io host: a REST gateway?)"
        return CheckStatus.PASS, f"{shown}{note}", ""
    if reach(value) == "local":
        return CheckStatus.PASS, f"{shown} (plain http on this machine: the offline stack)", ""
    return (
        CheckStatus.WARN,
        f"{shown} uses plain http to another host: the token travels unencrypted.",
        "Use https:// (Upstash's REST URLs are https).",
    )


#: Where a real setup's endpoints are, for the remedy of a local one.
_REAL_ENDPOINT = {
    "UPSTASH_REDIS_REST_URL": "the database's https://<name>.upstash.io URL from the Upstash "
    "console",
    "INNGEST_BASE_URL": "nothing: unset INNGEST_BASE_URL, so the SDK talks to Inngest Cloud",
    "OPENAI_BASE_URL": "nothing: unset OPENAI_BASE_URL, so the client talks to OpenAI",
    "REDIS_URL": "the rediss:// URL of a Redis the deployed app can reach, or unset it",
}


def _local_remedy(ctx: Context, names: list[str]) -> str:
    """What to do about endpoints on this machine while checking the real services."""
    wanted = "; ".join(f"{n}: {_REAL_ENDPOINT[n]}" for n in names)
    exported = [n for n in names if ctx.sources.get(n) == ENVIRONMENT]
    unset = (
        f" {', '.join(exported)} came from the environment, which wins over .env.local: "
        "unset the exported variables (a `tripkit dev` shell?)."
        if exported
        else ""
    )
    return (
        f"Set the real services' values in .env.local and Vercel ({wanted}).{unset} To "
        'check the offline stack instead: environment = "local" in notebook 01, or '
        "`tripkit check --local`."
    )


def _where(ctx: Context, name: str, value: str, *, source: bool = True) -> str:
    """``NAME (host:port, from <source>)``; the source is left out where the check's own
    detail ends with it."""
    came = ctx.sources.get(name) if source else None
    return f"{name} ({host_of(value)}" + (f", from {came})" if came else ")")


def _real_endpoint(ctx: Context, name: str, value: str, service: str) -> None:
    """Stops the check when ``name`` is on this machine (FAIL) or a private network (WARN)."""
    where = reach(value)
    if where == "local":
        raise Fail(
            f"{_where(ctx, name, value, source=False)} points at this machine, not "
            f"{service}: the checks would measure a local stack, and the deployed app cannot "
            "reach it.",
            _local_remedy(ctx, [name]),
        )
    if where == "private":
        raise Stop(
            CheckStatus.WARN,
            f"{_where(ctx, name, value, source=False)} is a private network address: only a "
            f"deployment inside that network reaches it, and {service} is not there.",
            f"Use {service}'s public endpoint unless the app runs in that network.",
        )


@_variable(
    "UPSTASH_REDIS_REST_TOKEN",
    "UPSTASH_REDIS_REST_TOKEN is set, without quotes or spaces",
)
async def rest_token(ctx: Context) -> Outcome:
    name = "UPSTASH_REDIS_REST_TOKEN"
    value = _read(ctx, name, _upstash_unset(ctx, name, other="UPSTASH_REDIS_REST_URL"))
    _no_placeholder(name, value)
    if value.lower().startswith(("http://", "https://")):
        return (
            CheckStatus.FAIL,
            f"{name} holds a URL.",
            "Are UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN swapped?",
        )
    return _is_set(value)


@_variable("INNGEST_EVENT_KEY", "INNGEST_EVENT_KEY is set and is not the signing key")
async def event_key(ctx: Context) -> Outcome:
    name = "INNGEST_EVENT_KEY"
    if ctx.local and not ctx.values.get("INNGEST_SIGNING_KEY"):
        unset: Stop = Skip("Unset; fine in dev mode (a local Inngest server takes any event key).")
    else:
        unset = Fail(
            f"{name} is not set: the app cannot send the event that starts a run.",
            "Inngest -> Settings -> Event Keys: copy the event key and store it as "
            "INNGEST_EVENT_KEY (.env.local and Vercel)." + _dev_server_hint(ctx, " instead"),
        )
    value = _read(ctx, name, unset)
    if value.startswith("signkey"):
        return (
            CheckStatus.FAIL,
            f"{name} holds a signing key ({shape(value)}).",
            "INNGEST_EVENT_KEY and INNGEST_SIGNING_KEY look swapped: the event key is under "
            "Settings -> Event Keys, the signing key under Settings -> Signing Keys.",
        )
    _no_placeholder(name, value)
    if value == _other(ctx, "INNGEST_SIGNING_KEY"):
        return (
            CheckStatus.FAIL,
            f"{name} is the same value as INNGEST_SIGNING_KEY.",
            "Copy the event key from Inngest -> Settings -> Event Keys.",
        )
    if value.startswith("evt_"):
        return (
            CheckStatus.WARN,
            f"{name} starts with evt_ ({shape(value)}): the guide's `evt_...` is an example; "
            "real Inngest event keys have no such prefix.",
            "Make sure you copied the key itself from Inngest -> Settings -> Event Keys.",
        )
    return _is_set(value)


def _check_signing_key(ctx: Context, name: str, value: str) -> None:
    """Fails unless ``value`` is a signkey-<env>-<hex> key (primary or fallback)."""
    guide = (
        "Inngest -> Settings -> Signing Keys: copy the key (it looks like "
        f"signkey-prod-<hex>) into {name} (.env.local and Vercel)."
    )
    if value.startswith("signkey_"):
        raise Fail(
            f"{name} is in the guide's placeholder format `signkey_...` ({shape(value)}); "
            "real signing keys look like signkey-<env>-<hex>.",
            guide,
        )
    event_key = _other(ctx, "INNGEST_EVENT_KEY")
    if value.startswith("evt_") or (event_key and value == event_key):
        raise Fail(
            f"{name} holds an event key ({shape(value)}).",
            "INNGEST_EVENT_KEY and INNGEST_SIGNING_KEY look swapped. " + guide,
        )
    _no_placeholder(name, value)
    match = _SIGNING_KEY.match(value)
    if match is None:
        swapped = " (the keys look swapped)" if event_key.startswith("signkey") else ""
        raise Fail(
            f"{name} is not in the signkey-<env>-<hex> format ({shape(value)}){swapped}.",
            guide,
        )
    body = match.group(2)
    if not body or len(body) % 2 or re.fullmatch(r"[0-9a-fA-F]+", body) is None:
        raise Fail(
            f"{name} is not hexadecimal after its signkey-{match.group(1)}- prefix "
            f"({shape(value)}): truncated or mistyped?",
            guide,
        )


@_variable("INNGEST_SIGNING_KEY", "INNGEST_SIGNING_KEY is a signkey-<env>-<hex> key")
async def signing_key(ctx: Context) -> Outcome:
    name = "INNGEST_SIGNING_KEY"
    if ctx.local:
        unset: Stop = Skip("Unset; fine in dev mode (the app does not check signatures).")
    else:
        unset = Fail(
            f"{name} is not set: without it the app runs in dev mode, talks to a local Inngest "
            "Dev Server (127.0.0.1:8288) and Inngest Cloud cannot call it.",
            "Inngest -> Settings -> Signing Keys: copy the key into INNGEST_SIGNING_KEY "
            "(.env.local and Vercel)." + _dev_server_hint(ctx),
        )
    value = _read(ctx, name, unset)
    _check_signing_key(ctx, name, value)
    if ctx.local:
        return (
            CheckStatus.PASS,
            f"Set ({shape(value)}). Cloud mode: the app checks signatures.",
            "",
        )
    return _is_set(value)


@_variable(
    "INNGEST_SIGNING_KEY_FALLBACK",
    "INNGEST_SIGNING_KEY_FALLBACK, if set, is a signing key",
)
async def signing_key_fallback(ctx: Context) -> Outcome:
    name = "INNGEST_SIGNING_KEY_FALLBACK"
    unset = Skip("Unset (optional: only needed while rotating the signing key).")
    value = _read(ctx, name, unset)
    _check_signing_key(ctx, name, value)
    if value == _other(ctx, "INNGEST_SIGNING_KEY"):
        return (
            CheckStatus.WARN,
            f"{name} is the same as INNGEST_SIGNING_KEY.",
            "Set it to the previous key while rotating, or unset it.",
        )
    return _is_set(value)


@_variable("OPENAI_API_KEY", "OPENAI_API_KEY is set and looks like a key")
async def openai_key(ctx: Context) -> Outcome:
    name = "OPENAI_API_KEY"
    unset = Fail(
        f"{name} is not set: every run would fail at its first model call.",
        "Create a key at https://platform.openai.com/api-keys and set OPENAI_API_KEY "
        "(.env.local and Vercel); locally, `tripkit dev` prints one for its model server.",
    )
    value = _read(ctx, name, unset)
    _no_placeholder(name, value)
    if value.startswith(("signkey", "evt_")):
        return (
            CheckStatus.FAIL,
            f"{name} holds an Inngest key ({shape(value)}).",
            "Set OPENAI_API_KEY to the OpenAI key (sk-...).",
        )
    if value.startswith("sk-"):
        return _is_set(value)
    base = ctx.values.get("OPENAI_BASE_URL")
    if base and not base.startswith(OPENAI_DEFAULT_BASE):
        return CheckStatus.PASS, f"Set ({shape(value)}); for the endpoint at {base}.", ""
    return (
        CheckStatus.WARN,
        f"{name} does not start with sk- ({shape(value)}), as OpenAI keys do.",
        "Check OpenAI API key is valid (openai.model tries it).",
    )
