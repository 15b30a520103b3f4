"""``make lab``: JupyterLab on ``notebooks/``, pointed at a stack, in one command.

Which services the notebooks use, unless ``--environment`` says otherwise:

1. a running ``tripkit dev`` whose ``KEY=VALUE`` lines are exported in this shell
   (``TRIPKIT_API_URL`` set): the notebooks use it;
2. else a ``.env.local`` at the project root: the notebooks check and use those services
   (``TRIPKIT_ENVIRONMENT=real``);
3. else the offline stack, started here and stopped with JupyterLab.

JupyterLab listens on 127.0.0.1 only, on a free port, with a random token in the URL it
prints: loopback is open to every user and process on the host, and a kernel runs code
with your files and credentials, so the token stays even there.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tripkit.errors import ConfigError, TripkitError
from tripkit.jupyter.targets import ENVIRONMENT_VAR
from tripkit.paths import project_root

HOST = "127.0.0.1"
#: JupyterLab defaults for these notebooks (a person's own settings still win): start the
#: notebook's kernel without asking, and never fetch news or check for updates.
SETTINGS = Path(__file__).with_name("lab_settings")


def choose(environment: str, root: Path, environ: dict[str, str]) -> tuple[str, bool, str]:
    """(the notebooks' environment, whether to start the offline stack, why), for the
    ``--environment`` asked (``auto``, ``local`` or ``real``)."""
    running = "TRIPKIT_API_URL" in environ
    env_file = root / ".env.local"
    if environment == "real" or (environment == "auto" and not running and env_file.is_file()):
        where = str(env_file) if env_file.is_file() else "the environment (no .env.local)"
        return "real", False, f"the real services configured in {where}"
    if running:
        return "local", False, f"the running tripkit dev at {environ['TRIPKIT_API_URL']}"
    return "local", True, "the offline stack started for this session"


def jupyter_command(port: int, token: str, notebooks: Path) -> list[str]:
    """JupyterLab serving ``notebooks`` on loopback; no browser, no calls home."""
    # Containers often run as root, which JupyterLab refuses without this.
    as_root = ["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []
    return [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--ServerApp.ip={HOST}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={notebooks}",
        f"--IdentityProvider.token={token}",
        f"--LabApp.app_settings_dir={SETTINGS}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        *as_root,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make lab", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="JupyterLab's port (0: a free one)")
    parser.add_argument("--token", default=None, help="the login token (default: random)")
    parser.add_argument(
        "--environment",
        choices=["auto", "local", "real"],
        default="auto",
        help="auto (default): a running tripkit dev, else .env.local, else the offline stack",
    )
    parser.add_argument(
        "--chunk-delay", type=float, default=0.02, help="the offline model's streaming pace (s)"
    )
    args = parser.parse_args(argv)
    try:
        return run(args)
    except TripkitError as exc:
        print(f"make lab: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    # The offline stack is a development tool: imported here only, as the CLI does.
    from tripkit.devstack import process
    from tripkit.devstack.serving import free_port
    from tripkit.devstack.stack import LocalStack, StackConfig

    root = project_root()
    notebooks = root / "notebooks"
    if not notebooks.is_dir():
        raise ConfigError(
            f"No notebooks/ folder in the project root {root}.",
            remedy="Run `make lab` from the tripkit checkout (or set TRIPKIT_ROOT to it).",
        )
    environ = dict(os.environ)
    environment, start_stack, why = choose(args.environment, root, environ)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack: Any = None
    lab: subprocess.Popen[bytes] | None = None
    try:
        if start_stack:
            print("Starting the offline stack...", flush=True)
            stack = LocalStack(StackConfig(chunk_delay=args.chunk_delay)).start()
            environ.update(stack.env)
        environ[ENVIRONMENT_VAR] = environment
        port = args.port or free_port(HOST)
        token = args.token if args.token is not None else secrets.token_urlsafe(24)
        lab = process.spawn(
            jupyter_command(port, token, notebooks), log=None, env=environ, cwd=notebooks
        )
        print(f"Notebooks use {why}.", flush=True)
        print(f"JupyterLab: http://{HOST}:{port}/lab?token={token}", flush=True)
        print("Ctrl-C stops JupyterLab" + (" and the stack." if stack else "."), flush=True)
        while not stop.wait(0.5):
            if lab.poll() is not None:
                print(f"make lab: JupyterLab exited ({lab.returncode}).", file=sys.stderr)
                return 1
        return 0
    finally:
        if lab is not None:
            process.stop(lab, grace=10)
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
