"""Rate limits (rpm, tpm, parallel requests) on keys, users and teams: exact across instances with Redis."""

from edgeproxy.limits.limiter import NO_LIMITS, Limit, RateLimiter, Ticket, limits_of
from edgeproxy.limits.windows import LocalWindows

__all__ = ["NO_LIMITS", "Limit", "LocalWindows", "RateLimiter", "Ticket", "limits_of"]
