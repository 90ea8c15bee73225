"""One exception hierarchy. Each class knows its HTTP status and OpenAI error type.

Every error that reaches a client is rendered by `ProxyError.body()` as
`{"error": {"message", "type", "param", "code"}}` with `code` the status as a string (COMPAT.md, Errors).
"""

from __future__ import annotations

from typing import Any


class ProxyError(Exception):
    status: int = 500
    type: str = "internal_server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if status is not None:
            self.status = status
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": str(self.status),
            }
        }


class InvalidRequestError(ProxyError):
    status = 400
    type = "invalid_request_error"


class NotFoundError(ProxyError):
    status = 404
    type = "not_found_error"


class ConflictError(ProxyError):
    status = 409
    type = "conflict_error"


class RequestTooLargeError(InvalidRequestError):
    status = 413


class AuthenticationError(ProxyError):
    status = 401
    type = "authentication_error"


class PermissionDeniedError(ProxyError):
    status = 403
    type = "permission_error"


class BudgetExceededError(ProxyError):
    status = 422
    type = "budget_exceeded"


class RateLimitError(ProxyError):
    status = 429
    type = "rate_limit_error"


class ServiceUnavailableError(ProxyError):
    """A dependency of ours (database, cache) is down."""

    status = 503
    type = "service_unavailable"


class UpstreamError(ProxyError):
    """An upstream LLM call failed. `retryable` and `cooldown` drive the router."""

    status = 502
    type = "api_error"
    retryable = True
    counts_for_cooldown = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        context_window: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, status=status, headers=headers)
        self.retry_after_s = retry_after_s
        self.context_window = context_window


class UpstreamConnectionError(UpstreamError):
    status = 502


class UpstreamTimeoutError(UpstreamError):
    status = 504
    type = "timeout"


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with a non-2xx status."""

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        retry_after_s: float | None = None,
        context_window: bool = False,
    ) -> None:
        super().__init__(
            message,
            status=client_status_for_upstream(upstream_status),
            retry_after_s=retry_after_s,
            context_window=context_window,
        )
        self.upstream_status = upstream_status
        self.type = _UPSTREAM_TYPES.get(upstream_status, "api_error")
        # 408, 409, 429 and 5xx are worth another attempt (COMPAT.md, Router).
        self.retryable = upstream_status in (408, 409, 429) or upstream_status >= 500
        self.counts_for_cooldown = upstream_status in (401, 404, 408, 429) or upstream_status >= 500


class UpstreamProtocolError(UpstreamError):
    """The upstream answered 2xx with something we cannot read (garbage body, cut stream)."""

    status = 502


_UPSTREAM_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout",
    429: "rate_limit_error",
}


def client_status_for_upstream(status: int) -> int:
    """Upstream 5xx become 502 (503 stays 503); client errors keep their status."""
    if status == 503:
        return 503
    if status >= 500:
        return 502
    return status
