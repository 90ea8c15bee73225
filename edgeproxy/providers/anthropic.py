"""Anthropic's Messages API (https://docs.anthropic.com/en/api/messages) behind OpenAI's chat format.

The differences we bridge: `system` is a top-level field, `max_tokens` is required, roles must alternate, images
and tool calls are content blocks, tool results are user turns, and streams are typed SSE events rather than
ready-made chunks.
"""

from __future__ import annotations

import json
from typing import Any

from edgeproxy.config import Deployment
from edgeproxy.errors import InvalidRequestError, UpstreamProtocolError
from edgeproxy.providers.base import CallType, Provider, StreamTranslator, UpstreamRequest, Usage, estimate_tokens
from edgeproxy.providers.wire import (
    ANTHROPIC_FINISH_REASONS,
    ChunkMaker,
    SSEDecoder,
    SSEEvent,
    auth_headers,
    chat_completion,
    parse_arguments,
    parse_json_object,
    require,
    single_prompt,
    split_data_url,
    sse_json,
    stop_list,
    text_completion,
    upstream_error_message,
    with_deployment_defaults,
)

DEFAULT_VERSION = "2023-06-01"
# Anthropic requires max_tokens; LiteLLM's default for Claude models is 4096 as well.
DEFAULT_MAX_TOKENS = 4096
_TOOL_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


class AnthropicProvider(Provider):
    name = "anthropic"

    def build_request(
        self, deployment: Deployment, call: CallType, body: dict[str, Any], *, stream: bool
    ) -> UpstreamRequest:
        if call is CallType.EMBEDDING:
            raise InvalidRequestError("anthropic models do not offer embeddings", param="model")
        body = with_deployment_defaults(deployment, body, call)
        if call is CallType.COMPLETION:
            messages: Any = [{"role": "user", "content": single_prompt(body, "anthropic")}]
        else:
            messages = body.get("messages")
        system, turns = to_anthropic_messages(messages)
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
        payload: dict[str, Any] = {"model": deployment.model, "messages": turns, "max_tokens": limit}
        if system:
            payload["system"] = system
        for name in ("temperature", "top_p", "top_k", "thinking"):
            if body.get(name) is not None:
                payload[name] = body[name]
        stops = stop_list(body.get("stop"))
        if stops:
            payload["stop_sequences"] = stops
        if stream:
            payload["stream"] = True
        if isinstance(body.get("user"), str):
            payload["metadata"] = {"user_id": body["user"]}  # Anthropic's only metadata field
        if body.get("tools"):
            payload["tools"] = [_tool(t) for t in body["tools"]]
            choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
            if choice:
                payload["tool_choice"] = choice
        return UpstreamRequest("POST", deployment.api_base + "/v1/messages", self._headers(deployment), payload)

    def parse_response(
        self, deployment: Deployment, call: CallType, body: dict[str, Any], raw: bytes
    ) -> tuple[dict[str, Any], Usage | None]:
        obj = parse_json_object(raw)
        blocks = require(obj, "content", list, "response")
        texts, calls, thinking = [], [], []
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append(str(block.get("text") or ""))
            elif kind == "tool_use":
                calls.append(_openai_tool_call(block))
            elif kind == "thinking":
                thinking.append(str(block.get("thinking") or ""))
        text = "".join(texts)
        usage = anthropic_usage(obj.get("usage"), text)
        finish = ANTHROPIC_FINISH_REASONS.get(str(obj.get("stop_reason")), "stop")
        if call is CallType.COMPLETION:
            return text_completion(deployment.model, text, finish, usage), usage
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            message["tool_calls"] = calls
        if thinking:
            message["reasoning_content"] = "".join(thinking)
        return chat_completion(deployment.model, message, finish, usage), usage

    def stream_translator(self, deployment: Deployment, call: CallType, body: dict[str, Any]) -> StreamTranslator:
        return AnthropicStreamTranslator(deployment.model, call)

    def probe_request(self, deployment: Deployment) -> UpstreamRequest:
        return UpstreamRequest("GET", deployment.api_base + "/v1/models", self._headers(deployment))

    def _headers(self, deployment: Deployment) -> dict[str, str]:
        headers = {
            "anthropic-version": str(deployment.params.get("api_version") or DEFAULT_VERSION),
            "content-type": "application/json",
        }
        if deployment.api_key:
            headers["x-api-key"] = deployment.api_key
        headers.update(auth_headers(deployment, bearer=False))
        return headers


# --------------------------------------------------------------------------- requests


def to_anthropic_messages(messages: Any) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """(system, turns): system messages lifted out, the rest as alternating user/assistant block lists."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list", param="messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            raise InvalidRequestError("each message must be an object", param="messages")
        role = message.get("role")
        if role in ("system", "developer"):
            system += _blocks(message.get("content"), images=False)
            continue
        if role == "tool":
            role, blocks = "user", [_tool_result(message)]
        elif role == "user":
            blocks = _blocks(message.get("content"))
        elif role == "assistant":
            blocks = _assistant_blocks(message)
        else:
            raise InvalidRequestError(f"anthropic models do not take {role!r} messages", param="messages")
        if not blocks:
            continue  # Anthropic rejects empty turns; an empty message adds nothing
        # Anthropic requires alternating roles: merge what OpenAI allows to repeat (e.g. several tool results).
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    if not turns and system:
        # OpenAI answers a system-only conversation; Anthropic needs a user turn, so the instructions become one.
        return None, [{"role": "user", "content": system}]
    if not turns:
        raise InvalidRequestError("messages need at least one non-empty user message", param="messages")
    return _system_field(system), turns


def _system_field(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    if not blocks:
        return None
    if any("cache_control" in b for b in blocks):
        return blocks  # prompt caching marks need the block form
    return "\n\n".join(b["text"] for b in blocks)


def _blocks(content: Any, images: bool = True) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequestError("message content must be a string or a list of parts", param="messages")
    blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and part.get("text"):
            block: dict[str, Any] = {"type": "text", "text": str(part["text"])}
        elif kind == "image_url" and images:
            block = _image(part)
        elif kind == "text":
            continue
        else:
            raise InvalidRequestError(f"anthropic models do not take {kind!r} content parts here", param="messages")
        if "cache_control" in part:
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _image(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if isinstance(url, str) and url.startswith("data:"):
        media_type, data = split_data_url(url)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequestError("image_url must be a data: URL or an http(s) URL", param="messages")


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = _blocks(message.get("content"), images=False)
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequestError("assistant tool_calls need function.name", param="messages")
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or ""),
                "name": function["name"],
                "input": parse_arguments(function.get("arguments")),
            }
        )
    return blocks


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(message.get("tool_call_id"), str):
        raise InvalidRequestError("tool messages need a tool_call_id", param="messages")
    content = message.get("content")
    return {
        "type": "tool_result",
        "tool_use_id": message["tool_call_id"],
        "content": content if isinstance(content, str) else _blocks(content),
    }


def _tool(tool: Any) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequestError("tools must be function tools with a name", param="tools")
    out: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise InvalidRequestError(f"unknown tool_choice {choice!r}", param="tool_choice")
        out: dict[str, Any] = dict(_TOOL_CHOICES[choice])
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if not isinstance(name, str):
            raise InvalidRequestError("tool_choice must name a function", param="tool_choice")
        out = {"type": "tool", "name": name}
    elif parallel is False:
        out = {"type": "auto"}
    else:
        return None
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


# --------------------------------------------------------------------------- responses


def anthropic_usage(raw: Any, text: str = "") -> Usage:
    """LiteLLM counts cache reads and writes in prompt_tokens (Anthropic's input_tokens excludes them)."""
    if not isinstance(raw, dict):
        return Usage(completion_tokens=estimate_tokens(text), estimated=True)

    def count(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) else 0

    read, write = count("cache_read_input_tokens"), count("cache_creation_input_tokens")
    return Usage(
        prompt_tokens=count("input_tokens") + read + write,
        completion_tokens=count("output_tokens"),
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def _openai_tool_call(block: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
        raise UpstreamProtocolError("upstream tool_use block has no id or name")
    arguments = json.dumps(block.get("input") or {})
    return {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}


class AnthropicStreamTranslator(StreamTranslator):
    """Messages API SSE events → chat.completion.chunk (or text_completion) dicts."""

    def __init__(self, model: str, call: CallType) -> None:
        super().__init__()
        self._sse = SSEDecoder()
        self._maker = ChunkMaker(model, call)
        self._tool_index: dict[int, int] = {}  # Anthropic content block index → OpenAI tool_calls index
        self._raw_usage: dict[str, Any] = {}
        self._final_usage = False  # message_delta's output_tokens arrived

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        return self._translate(self._sse.feed(data))

    def close(self) -> list[dict[str, Any]]:
        return self._translate(self._sse.close())

    def _translate(self, events: list[SSEEvent]) -> list[dict[str, Any]]:
        chunks: list[dict[str, Any]] = []
        try:
            for event in events:
                for obj in sse_json(event):
                    if not isinstance(obj, dict):
                        raise UpstreamProtocolError("upstream stream event is not a JSON object")
                    chunk = self._event(str(obj.get("type") or event.event), obj)
                    if chunk is not None:
                        chunks.append(chunk)
        finally:
            self._refresh_usage()  # also when the stream fails: what was generated is still billed
        return chunks

    def _event(self, kind: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        if kind == "message_start":
            self._add_usage(require(obj, "message", dict, "message_start event").get("usage"))
            return self._maker.chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            return self._block_start(obj.get("index"), require(obj, "content_block", dict, "content_block_start"))
        if kind == "content_block_delta":
            return self._block_delta(obj.get("index"), require(obj, "delta", dict, "content_block_delta"))
        if kind == "message_delta":
            self._add_usage(obj.get("usage"))
            self._final_usage = isinstance(obj.get("usage"), dict)
            reason = (obj.get("delta") or {}).get("stop_reason")
            return self._maker.chunk({}, ANTHROPIC_FINISH_REASONS.get(reason, "stop")) if reason else None
        if kind == "message_stop":
            self.finished = True
        elif kind == "error":
            message = upstream_error_message(json.dumps(obj).encode()) or "unknown error"
            raise UpstreamProtocolError(f"upstream failed mid-stream: {message}")
        return None  # ping, content_block_stop, and event types Anthropic may add later

    def _block_start(self, index: Any, block: dict[str, Any]) -> dict[str, Any] | None:
        if block.get("type") == "text" and block.get("text"):
            return self._text(str(block["text"]))
        if block.get("type") != "tool_use":
            return None
        call = _openai_tool_call({**block, "input": None})
        call["function"]["arguments"] = ""  # the input follows as input_json_delta fragments
        self._tool_index[index] = len(self._tool_index)
        return self._maker.chunk({"tool_calls": [{"index": self._tool_index[index], **call}]})

    def _block_delta(self, index: Any, delta: dict[str, Any]) -> dict[str, Any] | None:
        kind = delta.get("type")
        if kind == "text_delta":
            return self._text(str(delta.get("text") or ""))
        if kind == "input_json_delta":
            if index not in self._tool_index:
                raise UpstreamProtocolError("upstream sent tool input for a block that is not a tool_use")
            fragment = str(delta.get("partial_json") or "")
            self.text_parts.append(fragment)
            call = {"index": self._tool_index[index], "function": {"arguments": fragment}}
            return self._maker.chunk({"tool_calls": [call]})
        if kind == "thinking_delta":
            self.text_parts.append(str(delta.get("thinking") or ""))  # billed as output: count it
            return self._maker.chunk({"reasoning_content": str(delta.get("thinking") or "")})
        return None  # signature_delta, citations_delta

    def _text(self, text: str) -> dict[str, Any] | None:
        self.text_parts.append(text)
        return self._maker.chunk({"content": text})

    def _add_usage(self, raw: Any) -> None:
        # message_delta counts are cumulative and may repeat message_start's: the latest value of each wins.
        if isinstance(raw, dict):
            self._raw_usage.update({k: v for k, v in raw.items() if v is not None})

    def _refresh_usage(self) -> None:
        if not self._raw_usage:
            return
        usage = anthropic_usage(self._raw_usage)
        if not self._final_usage:
            # message_start reports output_tokens of 1 or so: until message_delta gives the real count, bill
            # what was generated so far (a client that leaves mid-stream is billed from this).
            usage.completion_tokens = max(usage.completion_tokens, estimate_tokens(self.text))
            usage.estimated = True
        self.usage = usage
