"""Step 5: the model API takes OPENAI_API_KEY and offers the configured model, asked with
the ``openai`` client (one ``models.retrieve``: no tokens are spent)."""

from __future__ import annotations

import time

from tripkit.checks.core import OPENAI_DEFAULT_BASE, STEP_5, CheckStatus, Context, Outcome, check
from tripkit.checks.probes import elapsed_ms


@check(
    "openai.model",
    STEP_5,
    "OpenAI: the key is valid and the model available",
    "The model API did not answer in time: check OPENAI_BASE_URL and the network.",
)
async def openai_model(ctx: Context) -> Outcome:
    import openai

    s = ctx.need_settings()
    base = s.openai_base_url or OPENAI_DEFAULT_BASE
    if s.openai_api_key is None:
        return (
            CheckStatus.FAIL,
            "OPENAI_API_KEY is not set.",
            "Check OPENAI_API_KEY: set it in .env.local and Vercel.",
        )
    started = time.perf_counter()
    try:
        async with openai.AsyncOpenAI(
            api_key=s.openai_api_key.get_secret_value(),
            base_url=base,
            max_retries=0,
            timeout=ctx.timeout,
        ) as client:
            model = await client.models.retrieve(s.openai_model)
    except openai.AuthenticationError:
        return (
            CheckStatus.FAIL,
            f"{base} refused OPENAI_API_KEY (HTTP 401).",
            "Check OPENAI_API_KEY: the key is invalid or revoked. Check OpenAI API key is "
            "valid (https://platform.openai.com/api-keys) and set it in .env.local and Vercel.",
        )
    except openai.PermissionDeniedError:
        return (
            CheckStatus.FAIL,
            f"{base} denied this key access (HTTP 403).",
            "Check OPENAI_API_KEY's project and permissions (models: read).",
        )
    except openai.NotFoundError:
        return (
            CheckStatus.FAIL,
            f"Model {s.openai_model} is not available to this key at {base} (HTTP 404).",
            "Model not available to this key: set TRIPKIT_OPENAI_MODEL to a model the key can "
            "use (e.g. gpt-4o-mini), or enable the model for the key's project.",
        )
    except openai.RateLimitError:
        return (
            CheckStatus.WARN,
            f"{base} answered HTTP 429 (rate limit or quota).",
            "Check the OpenAI account's quota and billing.",
        )
    except openai.APITimeoutError:
        return (
            CheckStatus.FAIL,
            f"{base} did not answer within {ctx.timeout:g} s.",
            "Check the network to the model API (OPENAI_BASE_URL).",
        )
    except openai.APIConnectionError:
        return (
            CheckStatus.FAIL,
            f"Cannot reach the model API at {base}.",
            "Check OPENAI_BASE_URL and the network; locally, is `tripkit dev` running?",
        )
    except openai.APIStatusError as exc:
        return (
            CheckStatus.FAIL,
            f"{base} answered HTTP {exc.status_code}.",
            "The model API is failing; try again later.",
        )
    return (
        CheckStatus.PASS,
        f"Key accepted; model {model.id} available at {base} ({elapsed_ms(started):.0f} ms).",
        "",
    )
