"""A local stand-in for the Inngest Dev Server (``inngest-cli dev``), offline.

The real dev server cannot be installed here, so this package plays its part for the app:
it takes events, takes the SDK's sync and drives the app's REAL serve handler over HTTP.
Start reading at :mod:`.routes` (the HTTP surface), then :mod:`.engine` (runs and the
call loop) and :mod:`.calls` (one call to the app); :mod:`.registry` holds what an app
registered. Run it alone with ``python -m tripkit.devstack.executor --port 8288``.
"""

from tripkit.devstack.executor.config import ExecutorConfig
from tripkit.devstack.executor.engine import Engine
from tripkit.devstack.executor.routes import create_app, run

__all__ = ["Engine", "ExecutorConfig", "create_app", "run"]
