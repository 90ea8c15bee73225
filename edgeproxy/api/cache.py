"""/cache/* admin routes (LiteLLM's shapes): ping, delete entries by x-litellm-cache-key, flush a namespace.

`/cache/flushall` empties the cache's namespace only (or the one named in the body), never the whole Redis:
the same server often holds rate-limit counters and other applications' data.
"""

from __future__ import annotations

from quart import Blueprint, Response

from edgeproxy.api.keys import caller, id_list, read_body, respond
from edgeproxy.cache import ResponseCache
from edgeproxy.errors import InvalidRequestError, ServiceUnavailableError
from edgeproxy.gateway import Gateway
from edgeproxy.redisclient import RedisUnavailable

blueprint = Blueprint("cache", __name__)


async def _admin_cache() -> tuple[Gateway, ResponseCache]:
    gw, principal = await caller()
    principal.require_admin()
    cache = gw.serving.cache
    if cache is None:
        raise ServiceUnavailableError("the response cache is not configured (litellm_settings.cache: true)")
    return gw, cache


@blueprint.get("/cache/ping")
async def ping() -> Response:
    gw, cache = await _admin_cache()
    if not await cache.ping():
        error = gw.redis.last_error if gw.redis is not None else None
        raise ServiceUnavailableError(f"the {cache.kind} cache does not answer ({error or 'no answer'})")
    body: dict[str, object] = {
        "status": "healthy",
        "cache_type": cache.kind,
        "ping_response": True,
        "namespace": cache.namespace,
        "ttl": cache.settings.ttl_s,
        "supported_call_types": list(cache.settings.supported_call_types),
    }
    if cache.kind == "redis" and gw.redis is not None:
        body["redis_url"] = gw.redis.settings.public_url
    return respond(body)


@blueprint.post("/cache/delete")
async def delete() -> Response:
    _, cache = await _admin_cache()
    keys = id_list(await read_body(), "keys")
    if not keys:
        raise InvalidRequestError('send {"keys": [...]} with values of x-litellm-cache-key', param="keys")
    try:
        deleted = await cache.delete(keys)
    except RedisUnavailable as error:
        raise ServiceUnavailableError(str(error)) from None
    return respond({"status": "success", "deleted": deleted})


@blueprint.post("/cache/flushall")
async def flushall() -> Response:
    _, cache = await _admin_cache()
    body = await read_body(optional=True)
    namespace = body.get("namespace") or cache.namespace
    if not isinstance(namespace, str):
        raise InvalidRequestError("'namespace' must be a string", param="namespace")
    try:
        deleted = await cache.flush(namespace)
    except RedisUnavailable as error:
        raise ServiceUnavailableError(str(error)) from None
    return respond({"status": "success", "namespace": namespace, "deleted": deleted})
