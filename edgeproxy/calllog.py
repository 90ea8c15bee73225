"""Logging: the handler setup (text or JSON lines), the one line per request, and opt-in stored prompts.

The per-request line is built from a `CallRecord` as a dict of fields. The text formatter renders it as
`call <id> <type> key=... user=... ...`; the JSON formatter puts the fields at the top level of the object, so
a log pipeline can filter on `model_group` or `status` without parsing text. The line never holds a key: the
caller is named by its key alias (or `master`), and error messages name deployments, never credentials.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edgeproxy.providers.base import CallType

if TYPE_CHECKING:
    from edgeproxy.calls import CallRecord

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WORKER_TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
MAX_LOGGED_ERROR_CHARS = 500


class CallLine:
    """A log message holding the fields of one finished call; rendered as text only if a handler formats it."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        f = self.fields
        parts = [
            f"call {f['call_id']} {f['call_type']}",
            f"key={_text(f['key_alias'])} user={_text(f['user'])} team={_text(f['team'])}",
            f"group={f['model_group']} deployment={_text(f['deployment'])} status={f['status']}",
            f"latency_ms={f['latency_ms']} ttft_ms={_text(f['ttft_ms'])}",
            f"tokens={f['prompt_tokens']}+{f['completion_tokens']} cost={f['cost']:.6f} cache_hit={f['cache_hit']}",
        ]
        if f.get("error"):
            parts.append(f"error={json.dumps(f['error'], ensure_ascii=False)}")
        return " ".join(parts)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or " " in text or '"' in text else text


def call_fields(record: CallRecord) -> dict[str, Any]:
    principal, usage, deployment = record.principal, record.usage, record.deployment
    error = record.error
    if error is not None and len(error) > MAX_LOGGED_ERROR_CHARS:
        error = error[:MAX_LOGGED_ERROR_CHARS] + "..."
    return {
        "call_id": record.call_id,
        "call_type": record.call_type.value,
        # The alias names the key for people; the key itself (or its hash) never reaches a log.
        "key_alias": principal.key_alias or ("master" if principal.is_master else None),
        "user": principal.user_id,
        "team": principal.team_id,
        "model_group": record.model_group,
        "requested_model": record.requested_model,
        "deployment": deployment.deployment_id if deployment else ("cache" if record.cache_hit else None),
        "status": record.status,
        "latency_ms": round((time.monotonic() - record.start_monotonic) * 1000, 1),
        "ttft_ms": round(record.ttft_s * 1000, 1) if record.ttft_s is not None else None,
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "cost": record.cost,
        "cache_hit": record.cache_hit,
        "retries": record.attempted_retries,
        "fallbacks": record.attempted_fallbacks,
        "error": error,
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line. A call line's fields go to the top level; other lines carry `message`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
        }
        if isinstance(record.msg, CallLine):
            entry["message"] = "call finished"
            entry.update(record.msg.fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(level: str = "info", log_format: str = "text", *, worker: bool = False) -> None:
    """Configure the root logger once per process (the CLI calls it again once the config is read)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(WORKER_TEXT_FORMAT if worker else TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # httpx logs every request URL at INFO: URLs may carry credentials, and it is noise at our volume.
    logging.getLogger("httpx").setLevel(logging.WARNING)


# --------------------------------------------------------------------------- prompts in spend logs (opt-in)


def stored_exchange(record: CallRecord, limit: int) -> dict[str, Any]:
    """The prompt and the answer for a spend log's `metadata`, each cut to `limit` characters."""
    body = record.body
    stored: dict[str, Any] = {}
    cut = False
    if record.call_type is CallType.CHAT:
        messages, cut = _messages(body.get("messages") or [], limit)
        stored["messages"] = messages
    else:
        name = "prompt" if record.call_type is CallType.COMPLETION else "input"
        value = body.get(name)
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        stored[name], cut = _cut(text, limit)
    if record.call_type is not CallType.EMBEDDING:
        answer = response_text(record.output)
        if answer is not None:
            stored["response"], answer_cut = _cut(answer, limit)
            cut = cut or answer_cut
    if cut:
        stored["truncated_to_chars"] = limit
    return stored


def _messages(messages: list[Any], limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Roles and text of each message, within `limit` characters in all (images are left out)."""
    kept: list[dict[str, Any]] = []
    left = limit
    cut = False
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p)
        text, was_cut = _cut(content if isinstance(content, str) else "", left)
        left -= len(text)
        cut = cut or was_cut
        kept.append({"role": message.get("role"), "content": text})
    return kept, cut


def _cut(text: str, limit: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[: max(0, limit)], True)


def response_text(output: Any) -> str | None:
    """The answer's text: from a response dict, cached chunks, or a stream's translator (its `text`)."""
    if output is None:
        return None
    if isinstance(output, dict):
        parts = []
        for choice in output.get("choices") or []:
            message = choice.get("message") or {}
            parts.append(str(message.get("content") or choice.get("text") or ""))
        return "".join(parts)
    if isinstance(output, list):  # cached stream chunks
        return "".join(
            str((choice.get("delta") or {}).get("content") or choice.get("text") or "")
            for chunk in output
            for choice in chunk.get("choices") or []
        )
    text = getattr(output, "text", None)
    return text if isinstance(text, str) else None
