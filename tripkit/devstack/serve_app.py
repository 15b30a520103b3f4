"""Serve ``tripkit.api:app`` on a listening socket inherited from the stack.

Several worker processes accept from one socket, as ``uvicorn --workers`` arranges it,
but each is a child of the stack (so it dies with it and is restarted on its own).
``uvicorn --fd`` would do, except that it wraps the descriptor as a Unix socket, so
asyncio never sets ``TCP_NODELAY`` on the connections and every keep-alive response
waits 40 ms for a delayed ACK. Here the socket is rebuilt from the descriptor itself.

``python -m tripkit.devstack.serve_app --fd N [--nice 10]``; configured, like the app,
from the environment only. ``--nice`` lowers the process's CPU priority: on a host that
runs the API too, steps then use the CPU the API leaves, and never the other way round.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence

import uvicorn


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tripkit.devstack.serve_app")
    parser.add_argument("--fd", type=int, required=True, help="an inherited listening socket")
    parser.add_argument("--nice", type=int, default=0, help="added to the CPU niceness")
    args = parser.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    try:
        sock = socket.socket(fileno=args.fd)  # family and protocol read from the descriptor
    except OSError as exc:
        print(f"error: file descriptor {args.fd} is not a socket ({exc.strerror})", file=sys.stderr)
        return 2
    config = uvicorn.Config("tripkit.api:app", log_level="info", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
