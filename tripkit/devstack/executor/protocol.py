"""The Inngest protocol's values, as the executor reads and writes them.

One place for the words the executor and the SDK must agree on, so a typo is an
AttributeError rather than a run that silently never matches. StrEnums, so the JSON and
the headers on the wire are the plain strings. The names follow the SDK's own
(``inngest._internal.server_lib.consts``) and the public SDK spec (inngest/inngest,
``docs/SDK_SPEC.md``).
"""

from __future__ import annotations

from enum import StrEnum


class Opcode(StrEnum):
    """What an SDK op (one entry of a 206 answer) asks the executor to do."""

    STEP_RUN = "StepRun"  # a step ran inline: store its data
    STEP_PLANNED = "StepPlanned"  # call again to run this step (several: in parallel)
    STEP_ERROR = "StepError"  # the step raised; retry it while attempts remain
    STEP_FAILED = "StepFailed"  # the step's last attempt failed: store the error
    SLEEP = "Sleep"  # wake at the ISO time in the op's ``name``
    INVOKE_FUNCTION = "InvokeFunction"  # run another function; its result is the step's
    WAIT_FOR_EVENT = "WaitForEvent"  # the event named in ``name``, opts ``if`` and ``timeout``
    # Sent by the SDK for features this executor does not implement; a run asking for
    # one fails with UnsupportedOpcode.
    AI_GATEWAY = "AIGateway"


SUPPORTED_OPCODES = (
    Opcode.STEP_RUN,
    Opcode.STEP_PLANNED,
    Opcode.STEP_ERROR,
    Opcode.STEP_FAILED,
    Opcode.SLEEP,
    Opcode.INVOKE_FUNCTION,
    Opcode.WAIT_FOR_EVENT,
)

#: ``opts.parallelMode`` of a planned step: "race" asks for the next step after each
#: parallel step ends; without it (the SDK's default "wait") after all of them.
PARALLEL_MODE_OPT = "parallelMode"
PARALLEL_MODE_RACE = "race"


class Header(StrEnum):
    """HTTP headers the executor reads or writes (lower case, as httpx and ASGI give them)."""

    AUTHORIZATION = "authorization"
    CONTENT_TYPE = "content-type"
    EVENT_ID_SEED = "x-inngest-event-id-seed"  # "<ms>,<base64 of 10 bytes>" on event sends
    NO_RETRY = "x-inngest-no-retry"
    REQUEST_ID = "x-request-id"
    RETRY_AFTER = "retry-after"
    SDK = "x-inngest-sdk"  # on every answer the SDK itself wrote
    SDK_HANDLED = "x-inngest-sdk-handled"  # on the SDK's refusals (a bad signature)
    SERVER_KIND = "x-inngest-server-kind"
    SIGNATURE = "x-inngest-signature"
    USER_AGENT = "user-agent"


class QueryParam(StrEnum):
    """Query parameters of the calls to the app's serve URL."""

    FUNCTION_ID = "fnId"
    STEP_ID = "stepId"
    SYNC_ID = "deployId"


#: ``stepId`` of a discovery call (one that targets no planned step).
DISCOVERY_STEP_ID = "step"


class ServerKind(StrEnum):
    """What the executor says it is; the SDK refuses a sync from the wrong kind."""

    CLOUD = "cloud"
    DEV = "dev"


class RunStatus(StrEnum):
    """A run's status, as the dev server's ``/v1/runs`` reports it."""

    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class InternalEvent(StrEnum):
    """Events the executor emits itself; their ``inngest/`` prefix is reserved."""

    FUNCTION_FAILED = "inngest/function.failed"
    FUNCTION_CANCELLED = "inngest/function.cancelled"
    FUNCTION_INVOKED = "inngest/function.invoked"  # the event an invoked run receives
    SCHEDULED_TIMER = "inngest/scheduled.timer"  # the event a cron run receives


RESERVED_EVENT_PREFIX = "inngest/"
