"""When a call is tried again, and how long to wait first (the same rules for the sync and async transports)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Optional

import httpx

from ._errors import ApiError
from ._requests import Call

__all__ = ["RetryPolicy", "Attempts", "retryable_answer"]


@dataclass(frozen=True)
class RetryPolicy:
    """How calls are retried.

    Attributes:
        deadline: Seconds from the first attempt after which no new attempt starts.
        initial_backoff: The first wait (seconds) when the API gives no ``retry_after``; it doubles each time.
        max_backoff: The longest wait between two attempts.
        max_transport_retries: Retries after transport errors (connection refused or reset, an answer lost), within
            the deadline: enough to ride out a restart of the control plane, not to hang on a wrong URL.
    """

    deadline: float = 120.0
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    max_transport_retries: int = 8


def retryable_answer(err: ApiError) -> bool:
    """Whether the API marks this answer as one to retry: ``503`` with ``retry_after``, ``409
    request_in_progress``, ``429 runner_busy``."""
    if err.status == 503 and err.retry_after is not None:
        return True
    if err.status == 409 and err.code == "request_in_progress":
        return True
    return err.status == 429 and err.code == "runner_busy"


# The request never left: any call can be sent again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def transport_retryable(call: Call, exc: httpx.TransportError) -> bool:
    """Whether a call that failed with this transport error may be sent again."""
    if isinstance(exc, _NOT_SENT):
        return True
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.ProxyError, httpx.LocalProtocolError)):
        return False
    # Sent, perhaps executed, the answer lost (reset, closed, timed out): only calls that are safe to repeat.
    return call.replay_safe


class Attempts:
    """The retry state of one call: counts attempts and computes the waits within the policy's deadline."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.started = time.monotonic()
        self.count = 0
        self.transport_failures = 0
        # A lost response was seen: the call may have been carried out already.
        self.maybe_done = False

    def next_wait(self, retry_after: Optional[float] = None, *, transport: bool = False) -> Optional[float]:
        """The wait before the next attempt, or None when the deadline (or, after a transport error, the number of
        such retries) does not leave room for one."""
        if transport:
            self.transport_failures += 1
            if self.transport_failures > self.policy.max_transport_retries:
                return None
        backoff: float = min(
            self.policy.max_backoff, self.policy.initial_backoff * (1 << min(max(self.count - 1, 0), 16))
        )
        # Jitter spreads the retries of many clients.
        wait: float = backoff * (0.5 + random.random() / 2)
        if retry_after is not None:
            wait = max(wait, float(retry_after))
        remaining = self.policy.deadline - (time.monotonic() - self.started)
        if wait >= remaining:
            return None
        return wait
