"""The SDK's exceptions.

Every exception the SDK raises on purpose is a :class:`BoxyardError`. Errors the API answered with are
:class:`ApiError` (with the API's stable ``code``), specialised by status or code so that callers can catch the
common cases by type.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "BoxyardError",
    "ConfigError",
    "TransportError",
    "ProtocolError",
    "AttachError",
    "WaitTimeout",
    "UnsafeArchiveError",
    "ApiError",
    "InvalidRequestError",
    "UnauthorizedError",
    "ForbiddenError",
    "NotFoundError",
    "ConflictError",
    "QuotaExceededError",
    "RateLimitedError",
    "ServerError",
    "UnavailableError",
]


class BoxyardError(Exception):
    """The base class of every exception the SDK raises."""


class ConfigError(BoxyardError):
    """No API URL or key could be found (arguments, ``BOXYARD_URL``/``BOXYARD_KEY``, or the CLI's profiles)."""


class TransportError(BoxyardError):
    """The API could not be reached, or the connection failed, and retrying did not help (or was not safe).

    Attributes:
        url: The API's base URL.
        attempts: How many times the request was tried.
    """

    def __init__(self, message: str, *, url: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.url = url
        self.attempts = attempts


class ProtocolError(BoxyardError):
    """The server sent something this SDK does not understand (e.g. a malformed attach frame)."""


class AttachError(BoxyardError):
    """An attach (the WebSocket stream of an execution) could not be resumed within its retry budget.

    Everything before ``cursor`` was received and handed out; nothing after it was.

    Attributes:
        execution_id: The execution.
        cursor: The cursor reached: output bytes ``[start, cursor)`` were received.
        attempts: Consecutive connection attempts that failed before giving up.
        last_error: Why the last attempt failed.
    """

    def __init__(self, *, execution_id: str, cursor: int, attempts: int, last_error: str) -> None:
        super().__init__(
            f"the attach to execution {execution_id} could not be resumed: {attempts} consecutive attempts failed "
            f"at cursor {cursor} (output up to byte {cursor} was received); last error: {last_error}"
        )
        self.execution_id = execution_id
        self.cursor = cursor
        self.attempts = attempts
        self.last_error = last_error


class WaitTimeout(BoxyardError, TimeoutError):
    """A wait (``Execution.wait(timeout=...)``, ``Box.wait_until_running``) ran out of time.

    The operation itself goes on; the handle stays usable (wait again to keep following it).
    """


class UnsafeArchiveError(BoxyardError):
    """A downloaded archive has an entry that would land outside the destination directory (refused)."""


class ApiError(BoxyardError):
    """The API answered with an error.

    Attributes:
        status: The HTTP status (for an error message on an attach's WebSocket: the status the code is documented
            with).
        code: The API's stable error code, e.g. ``not_found`` or ``quota_exceeded`` (docs/api.md lists them).
        message: What went wrong and what to do, as the API said it.
        retry_after: Seconds after which a retry may succeed, when the API said so.
        request_id: The request's id (quote it in a bug report).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: Optional[float] = None,
        request_id: Optional[str] = None,
    ) -> None:
        super().__init__(f"{code}: {message} (HTTP {status})")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.request_id = request_id

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r}, "
            f"retry_after={self.retry_after!r}, request_id={self.request_id!r})"
        )


class InvalidRequestError(ApiError):
    """400 or 422: the request is malformed or a value is out of range (``invalid_request``, ``invalid_json``, ...)."""


class UnauthorizedError(ApiError):
    """401: no key, or a malformed, unknown or revoked key."""


class ForbiddenError(ApiError):
    """403: the key's role is too small for the call."""


class NotFoundError(ApiError):
    """404: an unknown id, another org's object, a deleted box, an unknown snapshot."""


class ConflictError(ApiError):
    """409: the call is not possible in the object's current state (``invalid_state``, ``box_not_running``,
    ``execution_finished``, ``already_exists``, ...)."""


class QuotaExceededError(ApiError):
    """``quota_exceeded`` (422: larger than the org's per-box limits; 429: the org's totals would be exceeded)."""


class RateLimitedError(ApiError):
    """429 other than a quota: e.g. ``runner_busy`` (retried by the SDK until its deadline)."""


class ServerError(ApiError):
    """5xx: the platform failed the call (``internal``, ``runner_error``, ``boot_failed``, ...)."""


class UnavailableError(ServerError):
    """503: the database or the box's runner is unavailable, or no runner has room (``no_capacity``, ...)."""


def error_class(status: int, code: str) -> Type[ApiError]:
    """The exception class for an API error of this status and code."""
    if code == "quota_exceeded":
        return QuotaExceededError
    if status in (400, 422):
        return InvalidRequestError
    by_status: Dict[int, Type[ApiError]] = {
        401: UnauthorizedError,
        403: ForbiddenError,
        404: NotFoundError,
        409: ConflictError,
        429: RateLimitedError,
        503: UnavailableError,
    }
    if status in by_status:
        return by_status[status]
    if status >= 500:
        return ServerError
    return ApiError


def _retry_after_header(headers: Mapping[str, str]) -> Optional[float]:
    v = headers.get("retry-after")
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return None


def api_error(status: int, body: bytes, headers: Optional[Mapping[str, str]] = None) -> ApiError:
    """The exception for an error response: its status, and the API's error body when it is one."""
    headers = headers or {}
    code = "http_error"
    message = f"HTTP {status}"
    retry_after: Optional[float] = None
    request_id: Optional[str] = headers.get("x-request-id")
    parsed: Any = None
    try:
        parsed = json.loads(body.decode("utf-8")) if body else None
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("code"), str):
        code = parsed["code"]
        message = str(parsed.get("message", message))
        ra = parsed.get("retry_after")
        if isinstance(ra, (int, float)) and not isinstance(ra, bool):
            retry_after = float(ra)
        rid = parsed.get("request_id")
        if isinstance(rid, str):
            request_id = rid
    elif body:
        text = body[:500].decode("utf-8", "replace").strip()
        if text:
            message = f"HTTP {status}: {text}"
    if retry_after is None:
        retry_after = _retry_after_header(headers)
    cls = error_class(status, code)
    return cls(status, code, message, retry_after=retry_after, request_id=request_id)


# The status each code is documented with, for the error messages of an attach's WebSocket (they carry a code and a
# message only).
_CODE_STATUS: Dict[str, int] = {
    "invalid_message": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "invalid_state": 409,
    "box_not_running": 409,
    "execution_finished": 409,
    "already_exists": 409,
    "failed_precondition": 409,
    "invalid_request": 422,
    "runner_busy": 429,
    "internal": 500,
    "not_implemented": 501,
    "runner_error": 502,
    "runner_closed": 502,
    "runner_unavailable": 503,
}


def attach_error(code: str, message: str) -> ApiError:
    """The exception for an ``error`` message received on an attach."""
    status = _CODE_STATUS.get(code, 502)
    return error_class(status, code)(status, code, message)
