"""LLM errors, translated from openai/httpx errors where they cross into our code.

    PomocoreError
    └── LLMError                 any failure to get a usable answer from the LLM
        ├── LLMRetryable         worth another attempt after a backoff
        │   ├── LLMTimeout       the call exceeded its timeout
        │   ├── LLMUnreachable   connection refused/reset, DNS failure
        │   ├── LLMRateLimited   HTTP 429; carries retry_after_s from Retry-After
        │   └── LLMServerError   HTTP 5xx
        ├── LLMRequestRejected   HTTP 4xx other than 429 (auth, bad model, bad request):
        │                        NEVER retried, the same request would fail the same way
        ├── LLMBadAnswer         the answer did not parse or held a non-canonical label:
        │                        never retried as the same request (retried item by item)
        └── LLMUnavailable       we did not call at all: circuit open, budget spent, cooling down
"""

from __future__ import annotations

import email.utils
import time

import openai

from pomocore.core.errors import PomocoreError


class LLMError(PomocoreError):
    """Base of every LLM failure. `kind` is a short label used for counters."""

    kind = "error"


class LLMRetryable(LLMError):
    kind = "retryable"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LLMTimeout(LLMRetryable):
    kind = "timeout"


class LLMUnreachable(LLMRetryable):
    kind = "unreachable"


class LLMRateLimited(LLMRetryable):
    kind = "rate_limited"


class LLMServerError(LLMRetryable):
    kind = "server_error"


class LLMRequestRejected(LLMError):
    kind = "rejected"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class LLMBadAnswer(LLMError):
    kind = "bad_answer"


class LLMUnavailable(LLMError):
    """Not called: `reason` is circuit_open, budget or cooldown."""

    kind = "unavailable"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# The longest wait a provider's Retry-After can impose on a model. Longer (up to `inf`,
# which float() accepts) would close the model until the process restarts; capped, the
# model is tried again after this long, and the circuit breaker and the reclassifier's
# queue absorb a provider that is still refusing.
MAX_RETRY_AFTER_S = 600.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), at most
    MAX_RETRY_AFTER_S, or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds < 0:  # NaN or in the past
        return 0.0
    return min(seconds, MAX_RETRY_AFTER_S)


def translate(exc: BaseException) -> LLMError:
    """Map an openai (or httpx) exception to our tree. Messages carry no request content."""
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return LLMTimeout("LLM call timed out")
    if isinstance(exc, openai.APIConnectionError):
        return LLMUnreachable(f"LLM endpoint unreachable: {type(exc).__name__}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        headers = exc.response.headers
        retry_after = parse_retry_after(headers.get("retry-after"))
        if retry_after is None and headers.get("retry-after-ms"):
            try:
                retry_after = parse_retry_after(str(float(headers["retry-after-ms"]) / 1000.0))
            except ValueError:
                retry_after = None
        if status == 429:
            return LLMRateLimited("LLM rate limited (429)", retry_after)
        if status >= 500:
            return LLMServerError(f"LLM server error ({status})", retry_after)
        if status == 408:
            return LLMTimeout("LLM request timeout (408)", retry_after)
        return LLMRequestRejected(f"LLM rejected the request ({status})", status)
    if isinstance(exc, openai.OpenAIError):
        return LLMBadAnswer(f"LLM client error: {type(exc).__name__}")
    return LLMError(f"unexpected LLM failure: {type(exc).__name__}")
