"""Routing across deployments: strategies, cooldowns, retries, fallbacks and health probes."""

from edgeproxy.router.router import MAX_FALLBACKS, Routed, Router
from edgeproxy.router.state import RouterState

__all__ = ["MAX_FALLBACKS", "Routed", "Router", "RouterState"]
