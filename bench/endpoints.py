"""tripkit's two public routes side by side with the least an app can do for the same job.

Not a test: run it by hand (``.venv/bin/python bench/endpoints.py``; ``make bench`` runs
it). On one Redis (the embedded server, over RESP), with the same uvicorn settings (one
process, ``--no-access-log``), it measures:

1. **poll throughput**: ``GET /api/session/{id}`` against ``bench/bare_app.py``'s
   ``GET /session/{id}`` (one Redis ``GET``, the bytes returned as they are), requests/s
   at 64 connections;
2. **trigger latency**: ``POST /api/generate-bundles`` (``SET NX`` + the Inngest event,
   sent to tripkit's executor) against the bare ``POST /enqueue`` (one RQ enqueue),
   p50 / p99 over one connection, requests back to back.

The executor has no app synced, so its events start no runs: like the RQ queue, which no
worker reads, the work stops at the queue and nothing competes with the routes for CPU.

The load comes from Debian's ``wrk`` when it is on PATH (``apt-get install wrk``): a C
load generator leaves the CPU to the servers. Without it a Python client is used, which
loads the machine itself; the report says which. Rounds alternate the two servers so a
change in the machine's load hits both. Prints Markdown and writes bench/results.md
(section ``endpoints``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from shared import machine, percentile, preferences, write_section

from tripkit.devstack.redis_server import EmbeddedRedis
from tripkit.devstack.serving import free_port

HERE = Path(__file__).resolve().parent
UVICORN = [sys.executable, "-m", "uvicorn", "--no-access-log", "--host", "127.0.0.1"]


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url} exited:\n{log.read_text()[-2000:]}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not start in {timeout} s:\n{log.read_text()[-2000:]}")


@contextmanager
def serve(
    name: str, argv: list[str], env: dict[str, str], logs: Path, probe: str
) -> Iterator[Server]:
    port = free_port()
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=HERE
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url + probe, proc, log)
        yield Server(name, url, proc)
    finally:
        proc.terminate()
        proc.wait(10)


def _executor(logs: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = (logs / "executor.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tripkit.devstack.executor", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        text = line.decode().strip()
        if text.startswith("INNGEST_BASE_URL="):
            return proc, text.split("=", 1)[1]
    raise SystemExit("the executor did not start")


# -- load generation ------------------------------------------------------------------

_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_PCT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, *, connections: int, seconds: float, script: Path | None = None) -> str:
    argv = ["wrk", "-t", "2" if connections > 1 else "1", "-c", str(connections)]
    argv += ["-d", f"{max(1, round(seconds))}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    done = subprocess.run([*argv, url], capture_output=True, text=True, check=True)
    if "Non-2xx" in done.stdout or "Socket errors" in done.stdout:
        raise SystemExit(f"wrk saw errors against {url}:\n{done.stdout}")
    return done.stdout


def throughput(url: str, *, connections: int, seconds: float) -> float:
    if shutil.which("wrk"):
        match = _WRK_RPS.search(wrk(url, connections=connections, seconds=seconds))
        assert match, "wrk printed no Requests/sec"
        return float(match.group(1))
    return _python_throughput(url, connections=connections, seconds=seconds)


def _python_throughput(url: str, *, connections: int, seconds: float) -> float:
    import asyncio

    async def run() -> float:
        done = 0
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
            stop = time.monotonic() + seconds

            async def loop() -> None:
                nonlocal done
                while time.monotonic() < stop:
                    (await client.get(url)).raise_for_status()
                    done += 1

            started = time.monotonic()
            await asyncio.gather(*(loop() for _ in range(connections)))
            return done / (time.monotonic() - started)

    return asyncio.run(run())


def post_latency(url: str, body: dict[str, object], *, seconds: float) -> dict[str, float]:
    """p50 / p99 in ms of back-to-back POSTs over one connection."""
    if shutil.which("wrk"):
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(
                'wrk.method = "POST"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = [[{json.dumps(body)}]]\n"
            )
        out = wrk(url, connections=1, seconds=seconds, script=Path(script.name))
        os.unlink(script.name)
        found = {p: float(v) * _UNIT_MS[u] for p, v, u in _WRK_PCT.findall(out)}
        rps = _WRK_RPS.search(out)
        return {"p50": found["50"], "p99": found["99"], "rps": float(rps.group(1)) if rps else 0}
    samples: list[float] = []
    with httpx.Client(timeout=10.0) as client:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            started = time.perf_counter()
            client.post(url, json=body).raise_for_status()
            samples.append((time.perf_counter() - started) * 1000)
    return {
        "p50": percentile(samples, 50),
        "p99": percentile(samples, 99),
        "rps": len(samples) / seconds,
    }


# -- the benchmark ----------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--connections", type=int, default=64, help="for the poll throughput")
    parser.add_argument("--no-write", action="store_true", help="do not touch results.md")
    args = parser.parse_args()

    logs = Path(tempfile.mkdtemp(prefix="tripkit-bench-endpoints-"))
    with EmbeddedRedis() as redis_server:
        executor, inngest_url = _executor(logs)
        env = {
            **os.environ,
            "REDIS_URL": redis_server.url,
            "TRIPKIT_REDIS_TRANSPORT": "resp",
            "INNGEST_BASE_URL": inngest_url,
            "TRIPKIT_ROLE": "api",
            "PYTHONPATH": str(HERE),
        }
        for name in ("UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN", "INNGEST_SIGNING_KEY"):
            env.pop(name, None)
        try:
            with (
                serve("tripkit", [*UVICORN, "tripkit.api:app"], env, logs, "/healthz") as app,
                serve("bare", [*UVICORN, "bare_app:app"], env, logs, "/session/x") as bare,
            ):
                text = measure(app, bare, args)
        finally:
            executor.terminate()
            executor.wait(10)
    print(text)
    if not args.no_write:
        write_section(HERE / "results.md", "endpoints", text)
    return 0


def measure(app: Server, bare: Server, args: argparse.Namespace) -> str:
    body = preferences(1)
    accepted = httpx.post(f"{app.url}/api/generate-bundles", json=body, timeout=10).json()
    session_id = accepted["sessionId"]
    poll = {
        "tripkit": f"{app.url}/api/session/{session_id}",
        "bare": f"{bare.url}/session/{session_id}",
    }
    post = {"tripkit": f"{app.url}/api/generate-bundles", "bare": f"{bare.url}/enqueue"}
    for name in poll:  # warm both: first requests pay for imports and connections
        throughput(poll[name], connections=args.connections, seconds=1)
        post_latency(post[name], body, seconds=1)

    rps: dict[str, list[float]] = {"tripkit": [], "bare": []}
    lat: dict[str, list[dict[str, float]]] = {"tripkit": [], "bare": []}
    for _ in range(args.rounds):
        for name in ("tripkit", "bare"):
            rps[name].append(
                throughput(poll[name], connections=args.connections, seconds=args.seconds)
            )
        for name in ("tripkit", "bare"):
            lat[name].append(post_latency(post[name], body, seconds=args.seconds))

    med = {n: statistics.median(v) for n, v in rps.items()}
    paired = [t / b for t, b in zip(rps["tripkit"], rps["bare"], strict=True)]
    p50 = {n: statistics.median(x["p50"] for x in v) for n, v in lat.items()}
    p99 = {n: statistics.median(x["p99"] for x in v) for n, v in lat.items()}
    tool = "wrk" if shutil.which("wrk") else "a Python client (wrk not on PATH)"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Endpoints against bare ones (bench/endpoints.py)",
        "",
        f"{when}; {machine()}. One Redis over RESP, each app one uvicorn process; load from "
        f"{tool}; median of {args.rounds} alternating rounds of {args.seconds:g} s.",
        "",
        "| measure | tripkit | bare | ratio | target |",
        "|---|---|---|---|---|",
        f"| poll: `GET` req/s at {args.connections} connections | {med['tripkit']:,.0f} | "
        f"{med['bare']:,.0f} | {med['tripkit'] / med['bare']:.0%} of bare | >= 70% |",
        f"| trigger: `POST` p50 ms, one connection | {p50['tripkit']:.2f} | {p50['bare']:.2f} | "
        f"{p50['tripkit'] / p50['bare']:.1f}x | |",
        f"| trigger: `POST` p99 ms, one connection | {p99['tripkit']:.2f} | {p99['bare']:.2f} | "
        f"{p99['tripkit'] / p99['bare']:.1f}x | <= 3x |",
        "",
        "Each round measures both apps back to back, so its ratio is the fairer one when "
        "the machine's load drifts: poll ratio per round "
        + ", ".join(f"{r:.0%}" for r in paired)
        + f" (median {statistics.median(paired):.0%}).",
        "",
        "Rounds (req/s, then POST p99 ms): tripkit "
        + ", ".join(f"{r:,.0f}" for r in rps["tripkit"])
        + " / "
        + ", ".join(f"{x['p99']:.2f}" for x in lat["tripkit"])
        + "; bare "
        + ", ".join(f"{r:,.0f}" for r in rps["bare"])
        + " / "
        + ", ".join(f"{x['p99']:.2f}" for x in lat["bare"])
        + ".",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
