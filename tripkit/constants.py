"""The names every part must agree on: the app, its Inngest function, its event, its route.

The API sends the event, the worker serves the function, the checks look for it, the
local executor and the tests address it by its composite id: each imports the name from
here, so none of them has to import another (the worker pulls in inngest and openai).
Redis key names are in :mod:`tripkit.keys`.
"""

from __future__ import annotations

from typing import Final

#: The Inngest app id (the guide's app, "special-trips").
APP_ID: Final = "special-trips"
#: The Inngest function that generates the bundles, and its display name.
FUNCTION_ID: Final = "generate-bundles"
FUNCTION_NAME: Final = "Generate Trip Bundles"
#: The id Inngest registers the function under: ``<app id>-<function id>``.
FUNCTION_SLUG: Final = f"{APP_ID}-{FUNCTION_ID}"
#: The event that starts a generation.
EVENT_NAME: Final = "trips/bundles.requested"
#: The event that asks Inngest to cancel a generation's run (``data.sessionId``).
CANCEL_EVENT_NAME: Final = "trips/bundles.cancel-requested"
#: The function that marks a session whose run Inngest cancelled (its deadline passed).
STOPPED_FUNCTION_ID: Final = "generate-bundles-stopped"
#: Inngest's system event for a cancelled run (cancel_on, timeouts, the API, the dashboard).
FUNCTION_CANCELLED_EVENT: Final = "inngest/function.cancelled"
#: Where the app serves the Inngest SDK's endpoint (the guide's route).
SERVE_PATH: Final = "/api/inngest"
#: Retries per step after the first attempt (Inngest's default is 4, so 5 attempts).
RETRIES: Final = 4
#: The prefix of every Redis key tripkit writes, unless TRIPKIT_KEY_PREFIX says otherwise.
DEFAULT_KEY_PREFIX: Final = "tripkit"
