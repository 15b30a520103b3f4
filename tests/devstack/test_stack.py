"""`tripkit dev` as a user runs it: a real subprocess, its printed variables, real HTTP.

Each test starts ``python -m tripkit.cli dev`` (the same entry point as the ``tripkit``
script), reads what it prints, talks to the services over 127.0.0.1, and then stops it
the way a user would (Ctrl-C is SIGINT) or the way a crash would (SIGKILL), checking with
psutil that no service process outlives it. The app-restart test uses the session's
``stack`` fixture (the same LocalStack, in-process).
"""

from __future__ import annotations

import contextlib
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from helpers import clean_env, free_port, process_gone, wait_final, wait_until

from tripkit import keys
from tripkit.constants import DEFAULT_KEY_PREFIX, FUNCTION_SLUG
from tripkit.devstack.stack import LocalStack, default_workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

READY_LINE = "tripkit dev ready"
PRINTED = (
    "TRIPKIT_API_URL",
    "TRIPKIT_WORKER_URL",
    "REDIS_URL",
    "UPSTASH_REDIS_REST_URL",
    "UPSTASH_REDIS_REST_TOKEN",
    "INNGEST_BASE_URL",
    "OPENAI_BASE_URL",
)
SERVICES = ("redis_server", "rest_gateway", "executor", "model_server", "uvicorn")
#: The production shape: the services above (uvicorn: the API), and the worker processes.
WORKERS = default_workers()
START_TIMEOUT = 60.0
SIMPLE_PREFERENCES = {"interests": ["food"], "tripLengthDays": 2, "budget": 800, "bundleCount": 1}


@dataclass
class Dev:
    """A running ``tripkit dev`` and what it printed."""

    proc: subprocess.Popen[str]
    lines: queue.SimpleQueue[str | None]
    output: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def read_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        ready = False
        while not (ready and all(name in self.env for name in PRINTED)):
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"tripkit dev not ready in {timeout:.0f} s; printed:\n" + self.printed()
                ) from None
            if line is None:
                raise AssertionError(
                    f"tripkit dev exited ({self.proc.wait()}) before it was ready:\n"
                    + self.printed()
                )
            self.output.append(line)
            if line == READY_LINE:
                ready = True
            elif ready and "=" in line and not line.startswith("#"):
                name, value = line.split("=", 1)
                self.env[name] = value

    def printed(self) -> str:
        while True:  # whatever arrived since
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.output.append(line)
        return "\n".join(self.output)

    def service_processes(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=False)

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)


def _pump(stream: object, lines: queue.SimpleQueue[str | None]) -> None:
    assert hasattr(stream, "readline")
    for line in iter(stream.readline, ""):
        lines.put(line.rstrip("\n"))
    lines.put(None)


@contextlib.contextmanager
def tripkit_dev(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[Dev]:
    """Start ``tripkit dev ARGS`` and wait for its variables; always ends it and its tree."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tripkit.cli", "dev", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env if env is not None else clean_env(),
        cwd=cwd,
    )
    lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    dev = Dev(proc, lines)
    try:
        dev.read_until_ready()
        yield dev
    finally:
        tree: list[psutil.Process] = []
        with contextlib.suppress(psutil.NoSuchProcess):
            tree = dev.descendants()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for child in tree:  # should already be gone; never leave strays behind
            with contextlib.suppress(psutil.NoSuchProcess):
                if not process_gone(child.pid):
                    child.kill()
        if proc.stdout is not None:
            proc.stdout.close()


def _names(processes: list[psutil.Process]) -> list[str]:
    names = []
    for p in processes:
        try:
            names.append(" ".join(p.cmdline()))
        except psutil.Error:
            names.append(f"pid {p.pid} (gone)")
    return names


def _survivors(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still running after ``timeout`` seconds."""
    wait_until(lambda: all(process_gone(p.pid) for p in processes), timeout)
    return [p for p in processes if not process_gone(p.pid)]


def test_dev_prints_working_variables_and_ctrl_c_stops_every_service(tmp_path: Path) -> None:
    with tripkit_dev("--port", "0", "--chunk-delay", "0", cwd=tmp_path) as dev:
        env = dev.env
        health = httpx.get(f"{env['TRIPKIT_API_URL']}/healthz", timeout=10)
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok"

        ping = httpx.post(
            env["UPSTASH_REDIS_REST_URL"],
            json=["PING"],
            headers={"Authorization": f"Bearer {env['UPSTASH_REDIS_REST_TOKEN']}"},
            timeout=10,
        )
        assert ping.status_code == 200, ping.text
        assert ping.json() == {"result": "PONG"}
        refused = httpx.post(
            env["UPSTASH_REDIS_REST_URL"],
            json=["PING"],
            headers={"Authorization": "Bearer wrong-token"},
            timeout=10,
        )
        assert refused.status_code == 401

        functions = httpx.get(f"{env['INNGEST_BASE_URL']}/v1/functions", timeout=10)
        assert functions.status_code == 200
        assert FUNCTION_SLUG in [fn["id"] for fn in functions.json()["data"]]

        assert env["REDIS_URL"].startswith("redis://127.0.0.1:")
        assert env["OPENAI_BASE_URL"].endswith("/v1")

        services = dev.service_processes()
        commands = _names(services)
        assert len(services) == len(SERVICES) + WORKERS, commands
        for name in SERVICES:
            assert sum(name in c for c in commands) == 1, (name, commands)
        assert sum("tripkit.devstack.serve_app" in c for c in commands) == WORKERS, commands

        # Split: the API serves the public routes, the workers /api/inngest, nothing else.
        api, worker = env["TRIPKIT_API_URL"], env["TRIPKIT_WORKER_URL"]
        assert api != worker
        assert httpx.get(f"{api}/api/inngest", timeout=10).status_code == 404
        assert (
            httpx.get(f"{worker}/api/inngest", timeout=10).json()["function_count"] == 2
        )  # generate-bundles and its stopped handler
        absent = httpx.post(f"{worker}/api/generate-bundles", json=SIMPLE_PREFERENCES, timeout=10)
        assert absent.status_code == 404, absent.text
        assert httpx.get(f"{worker}/healthz", timeout=10).json()["role"] == "worker"
        assert httpx.get(f"{api}/healthz", timeout=10).json()["role"] == "api"
        tree = dev.descendants()
        # The embedded server by default: the pinned valkey-server, named in the output.
        assert any("valkey-server" in c for c in _names(tree)), _names(tree)
        assert "# redis server: valkey 8.1.8" in dev.printed().splitlines()

        dev.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            status = dev.proc.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail("tripkit dev did not stop within 20 s of SIGINT:\n" + dev.printed())
        assert status == 0, dev.printed()
        assert "Traceback" not in dev.printed()
        survivors = _survivors(tree, 5)
        assert survivors == [], _names(survivors)


def test_sigkilled_dev_takes_its_services_with_it(tmp_path: Path) -> None:
    with tripkit_dev("--port", "0", "--chunk-delay", "0", cwd=tmp_path) as dev:
        tree = dev.descendants()
        assert len(dev.service_processes()) == len(SERVICES) + WORKERS, _names(tree)
        api = dev.env["TRIPKIT_API_URL"]
        assert httpx.get(f"{api}/healthz", timeout=10).status_code == 200

        dev.proc.kill()  # no Python code runs in the parent: only PDEATHSIG can help
        dev.proc.wait(10)
        survivors = _survivors(tree, 10)
        assert survivors == [], _names(survivors)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{api}/healthz", timeout=2)


def test_dev_honours_port(tmp_path: Path) -> None:
    port = free_port()
    with tripkit_dev("--port", str(port), "--chunk-delay", "0", cwd=tmp_path) as dev:
        url = dev.env["TRIPKIT_API_URL"]
        assert url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize("role", ["worker", "api"])
def test_app_processes_are_restarted_after_they_die(stack: LocalStack, role: str) -> None:
    before = stack.app_restarts
    assert httpx.get(f"{stack.api_url}/healthz", timeout=10).status_code == 200

    killed = stack.kill_app(role=role)
    assert killed
    assert wait_until(lambda: all(process_gone(pid) for pid in killed), 10)
    stack.wait_app_restarted(before + len(killed))

    names = [name for name in stack.app_services if name.startswith(role)]
    pids = [stack.services[name].proc.pid for name in names]  # type: ignore[union-attr]
    assert not set(pids) & set(killed)
    assert all(psutil.Process(pid).is_running() for pid in pids)
    assert httpx.get(f"{stack.api_url}/healthz", timeout=10).status_code == 200
    # The restarted app is the same deployment to the executor: a generation completes.
    response = httpx.post(
        f"{stack.api_url}/api/generate-bundles", json=SIMPLE_PREFERENCES, timeout=10
    )
    assert response.status_code == 202, response.text
    final = wait_final(stack.api_url, response.json()["sessionId"])
    assert final["status"] == "completed", final
    assert len(final["bundles"]) == 1


#: What a developer's shell or .env.local may hold for production. Each one, if it reached
#: the stack's app, would break the local run or send it elsewhere (OPENAI_MODEL: a model
#: the local server does not serve; INNGEST_SERVE_ORIGIN: the SDK registers that URL).
LEAKY = {
    "OPENAI_MODEL": "gpt-4-turbo",
    "INNGEST_SERVE_ORIGIN": "https://special-trips.vercel.invalid",
    "INNGEST_SIGNING_KEY": "signkey-test-" + "ab12" * 16,
    "INNGEST_EVENT_KEY": "real-event-key-" + "9" * 20,
    "INNGEST_BASE_URL": "https://inngest.invalid",
    "OPENAI_API_KEY": "sk-proj-REALKEY" + "x" * 30,
    "OPENAI_BASE_URL": "https://api.openai.invalid/v1",
    "REDIS_URL": "redis://:hunter2@redis.elsewhere.invalid:6379/0",
    "UPSTASH_REDIS_REST_URL": "https://real-db.upstash.invalid",
    "UPSTASH_REDIS_REST_TOKEN": "real-upstash-token-" + "z" * 20,
    "TRIPKIT_REDIS_TRANSPORT": "resp",
    "TRIPKIT_KEY_PREFIX": "prod",
}


def test_real_credentials_in_env_and_dotenv_do_not_reach_the_stack(tmp_path: Path) -> None:
    dotenv = "\n".join(f"{k}={v}" for k, v in LEAKY.items())
    (tmp_path / ".env.local").write_text(dotenv + "\n")
    (tmp_path / ".env").write_text(dotenv + "\n")
    env = clean_env(LEAKY)

    with tripkit_dev("--port", "0", "--chunk-delay", "0", env=env, cwd=tmp_path) as dev:
        printed = dev.env
        for name in PRINTED:
            assert printed[name] != LEAKY.get(name), name
        api = printed["TRIPKIT_API_URL"]

        health = httpx.get(f"{api}/healthz", timeout=10).json()
        assert health["redis"]["ok"] is True and health["redis"]["transport"] == "rest", health
        assert health["inngest"]["url"] == printed["INNGEST_BASE_URL"], health

        response = httpx.post(f"{api}/api/generate-bundles", json=SIMPLE_PREFERENCES, timeout=10)
        assert response.status_code == 202, response.text
        session_id = response.json()["sessionId"]
        final = wait_final(api, session_id)
        assert final["status"] == "completed", final
        assert len(final["bundles"]) == 1

        # The run went through the stack's executor, and the session is in the stack's own
        # Redis under the default prefix (not the caller's TRIPKIT_KEY_PREFIX).
        runs = httpx.get(f"{printed['INNGEST_BASE_URL']}/v1/events/{session_id}/runs", timeout=10)
        assert [r["status"] for r in runs.json()["data"]] == ["Completed"]
        exists = httpx.post(
            printed["UPSTASH_REDIS_REST_URL"],
            json=["EXISTS", keys.session_key(DEFAULT_KEY_PREFIX, session_id)],
            headers={"Authorization": f"Bearer {printed['UPSTASH_REDIS_REST_TOKEN']}"},
            timeout=10,
        )
        assert exists.json() == {"result": 1}
