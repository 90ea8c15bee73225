"""Ollama's native API (https://github.com/ollama/ollama/blob/main/docs/api.md).

Chats go to /api/chat for both `ollama/` and `ollama_chat/` (COMPAT.md: flattening chats into /api/generate
prompts hurts quality), completions to /api/generate, embeddings to /api/embed. Streams are NDJSON, one JSON object
a line, the last one `done: true` with the token counts.
"""

from __future__ import annotations

import json
from typing import Any

from edgeproxy.config import Deployment
from edgeproxy.errors import InvalidRequestError, UpstreamProtocolError
from edgeproxy.providers.base import (
    CallType,
    Provider,
    StreamTranslator,
    UpstreamRequest,
    Usage,
    estimate_tokens,
)
from edgeproxy.providers.wire import (
    OLLAMA_FINISH_REASONS,
    ChunkMaker,
    LineSplitter,
    auth_headers,
    chat_completion,
    content_text,
    embedding_list,
    parse_arguments,
    parse_json_object,
    parse_json_text,
    raise_stream_error,
    require,
    single_prompt,
    split_data_url,
    stop_list,
    text_completion,
    tool_call_id,
    with_deployment_defaults,
)

_OPTION_NAMES = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")


class OllamaProvider(Provider):
    name = "ollama"

    def build_request(
        self, deployment: Deployment, call: CallType, body: dict[str, Any], *, stream: bool
    ) -> UpstreamRequest:
        body = with_deployment_defaults(deployment, body, call)
        headers = auth_headers(deployment)
        if call is CallType.EMBEDDING:
            embed = _embed_payload(deployment, body)
            return UpstreamRequest("POST", deployment.api_base + "/api/embed", headers, embed)
        payload: dict[str, Any] = {"model": deployment.model, "stream": stream, "options": _options(deployment, body)}
        if call is CallType.CHAT:
            payload["messages"] = to_ollama_messages(body.get("messages"))
            if body.get("tools"):
                payload["tools"] = body["tools"]  # Ollama takes OpenAI's function-tool format as is
        else:
            payload["prompt"] = single_prompt(body, "ollama")
            if isinstance(body.get("suffix"), str):
                payload["suffix"] = body["suffix"]
        fmt = _format(body.get("response_format"))
        if fmt is not None:
            payload["format"] = fmt
        keep_alive = body.get("keep_alive", deployment.params.get("keep_alive"))
        if keep_alive is not None:
            payload["keep_alive"] = keep_alive
        path = "/api/chat" if call is CallType.CHAT else "/api/generate"
        return UpstreamRequest("POST", deployment.api_base + path, headers, payload)

    def parse_response(
        self, deployment: Deployment, call: CallType, body: dict[str, Any], raw: bytes
    ) -> tuple[dict[str, Any], Usage | None]:
        obj = parse_json_object(raw)
        if call is CallType.EMBEDDING:
            return _embedding_response(deployment, body, obj)
        if call is CallType.COMPLETION:
            text = require(obj, "response", str, "response")
            usage = _usage(obj, text)
            return text_completion(deployment.model, text, _finish(obj), usage), usage
        reply = require(obj, "message", dict, "response")
        message, text = from_ollama_message(reply)
        usage = _usage(obj, text)
        finish = "tool_calls" if message.get("tool_calls") else _finish(obj)
        return chat_completion(deployment.model, message, finish, usage), usage

    def stream_translator(self, deployment: Deployment, call: CallType, body: dict[str, Any]) -> StreamTranslator:
        return OllamaStreamTranslator(deployment.model, call)

    def probe_request(self, deployment: Deployment) -> UpstreamRequest:
        return UpstreamRequest("GET", deployment.api_base + "/api/tags", auth_headers(deployment))


class OllamaChatProvider(OllamaProvider):
    name = "ollama_chat"


# --------------------------------------------------------------------------- requests


def _options(deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
    options = {name: body[name] for name in _OPTION_NAMES if body.get(name) is not None}
    stop = stop_list(body.get("stop"))
    if stop:
        options["stop"] = stop
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        options["num_predict"] = limit
    if deployment.params.get("num_ctx") is not None:
        options["num_ctx"] = deployment.params["num_ctx"]
    return options


def _format(response_format: Any) -> Any:
    """OpenAI response_format → Ollama `format`: "json", or the JSON schema itself (structured outputs)."""
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_object":
        return "json"
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else "json"
    return None


def to_ollama_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list", param="messages")
    tool_names: dict[str, str] = {}  # tool_call_id → function name, so tool results can say which tool answered
    converted = []
    for message in messages:
        if not isinstance(message, dict):
            raise InvalidRequestError("each message must be an object", param="messages")
        converted.append(_to_ollama_message(message, tool_names))
    return converted


def _to_ollama_message(message: dict[str, Any], tool_names: dict[str, str]) -> dict[str, Any]:
    role = message.get("role")
    role = "system" if role == "developer" else role  # OpenAI's newer name for system
    content = message.get("content")
    out: dict[str, Any] = {"role": role, "content": content_text(content)}
    parts = content if isinstance(content, list) else []
    images = [_image(p) for p in parts if isinstance(p, dict) and p.get("type") == "image_url"]
    if images:
        out["images"] = images
    if role == "assistant" and message.get("tool_calls"):
        out["tool_calls"] = [_tool_call(call, tool_names) for call in message["tool_calls"]]
    if role == "tool" and message.get("tool_call_id") in tool_names:
        out["tool_name"] = tool_names[message["tool_call_id"]]
    return out


def _image(part: dict[str, Any]) -> str:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise InvalidRequestError("image_url parts need a url", param="messages")
    if not url.startswith("data:"):
        # Ollama only takes base64 images, and translators do no I/O to fetch a remote one.
        raise InvalidRequestError("ollama models need images as base64 data: URLs, not remote URLs", param="messages")
    return split_data_url(url)[1]


def _tool_call(call: Any, tool_names: dict[str, str]) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequestError("assistant tool_calls need function.name", param="messages")
    if isinstance(call.get("id"), str):
        tool_names[call["id"]] = function["name"]
    return {"function": {"name": function["name"], "arguments": parse_arguments(function.get("arguments"))}}


def _embed_payload(deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
    given = body.get("input")
    if not (isinstance(given, str) or (isinstance(given, list) and all(isinstance(i, str) for i in given))):
        raise InvalidRequestError("ollama embeddings take a string or a list of strings", param="input")
    payload: dict[str, Any] = {"model": deployment.model, "input": given, "truncate": True}
    if body.get("dimensions") is not None:
        payload["dimensions"] = body["dimensions"]
    if deployment.params.get("keep_alive") is not None:
        payload["keep_alive"] = deployment.params["keep_alive"]
    return payload


# --------------------------------------------------------------------------- responses


def from_ollama_message(reply: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """An OpenAI assistant message from Ollama's, and the generated text (for estimates)."""
    content = reply.get("content")
    if content is not None and not isinstance(content, str):
        raise UpstreamProtocolError("upstream message content is not a string")
    message: dict[str, Any] = {"role": "assistant", "content": content or ""}
    calls = [openai_tool_call(call) for call in reply.get("tool_calls") or []]
    if calls:
        message["tool_calls"] = calls
        message["content"] = content or None  # OpenAI sends null content beside tool calls
    if isinstance(reply.get("thinking"), str) and reply["thinking"]:
        message["reasoning_content"] = reply["thinking"]
    text = (content or "") + "".join(c["function"]["arguments"] for c in calls)
    return message, text


def openai_tool_call(call: Any, index: int | None = None) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise UpstreamProtocolError("upstream tool call has no function name")
    arguments = function.get("arguments")
    out: dict[str, Any] = {} if index is None else {"index": index}
    out.update(
        id=call.get("id") or tool_call_id(),
        type="function",
        function={
            "name": function["name"],
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments or {}),
        },
    )
    return out


def _finish(obj: dict[str, Any]) -> str:
    return OLLAMA_FINISH_REASONS.get(str(obj.get("done_reason")), "stop")


def _usage(obj: dict[str, Any], text: str) -> Usage:
    # Ollama leaves prompt_eval_count out when the whole prompt came from its cache.
    prompt = obj.get("prompt_eval_count")
    completion = obj.get("eval_count")
    return Usage(
        prompt_tokens=prompt if isinstance(prompt, int) else 0,
        completion_tokens=completion if isinstance(completion, int) else estimate_tokens(text),
        estimated=not isinstance(completion, int),
    )


def _embedding_response(
    deployment: Deployment, body: dict[str, Any], obj: dict[str, Any]
) -> tuple[dict[str, Any], Usage]:
    vectors = require(obj, "embeddings", list, "embedding response")
    if not all(isinstance(v, list) for v in vectors):
        raise UpstreamProtocolError("upstream embeddings are not lists of numbers")
    count = obj.get("prompt_eval_count")
    usage = Usage(prompt_tokens=count if isinstance(count, int) else 0)
    return embedding_list(deployment.model, vectors, usage, body.get("encoding_format")), usage


class OllamaStreamTranslator(StreamTranslator):
    """NDJSON lines of /api/chat or /api/generate → chat.completion.chunk or text_completion chunks."""

    def __init__(self, model: str, call: CallType) -> None:
        super().__init__()
        self._lines = LineSplitter()
        self._maker = ChunkMaker(model, call)
        self._started = False
        self._tool_calls = 0

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        return self._translate(self._lines.feed(data))

    def close(self) -> list[dict[str, Any]]:
        return self._translate(self._lines.close())

    def _translate(self, lines: list[str]) -> list[dict[str, Any]]:
        chunks: list[dict[str, Any]] = []
        for line in lines:
            obj = parse_json_text(line, "stream line")
            if not isinstance(obj, dict):
                raise UpstreamProtocolError("upstream stream line is not a JSON object")
            raise_stream_error(obj)
            chunks += [c for c in self._line(obj) if c is not None]
        return chunks

    def _line(self, obj: dict[str, Any]) -> list[dict[str, Any] | None]:
        delta = self._delta(obj)
        out: list[dict[str, Any] | None] = []
        if not self._started and self._maker.chat:
            out.append(self._maker.chunk({"role": "assistant", **({"content": ""} | delta)}))
        elif delta:
            out.append(self._maker.chunk(delta))
        self._started = True
        if obj.get("done"):
            finish = "tool_calls" if self._tool_calls else _finish(obj)
            out.append(self._maker.chunk({}, finish))
            self.usage = _usage(obj, self.text)
            self.finished = True
        return out

    def _delta(self, obj: dict[str, Any]) -> dict[str, Any]:
        if not self._maker.chat:
            text = obj.get("response")
            if not isinstance(text, str):
                raise UpstreamProtocolError("upstream stream line has no 'response' text")
            self.text_parts.append(text)
            return {"content": text} if text else {}
        message = require(obj, "message", dict, "stream line")
        delta: dict[str, Any] = {}
        content = message.get("content")
        if isinstance(content, str) and content:
            delta["content"] = content
            self.text_parts.append(content)
        if isinstance(message.get("thinking"), str) and message["thinking"]:
            delta["reasoning_content"] = message["thinking"]
            self.text_parts.append(message["thinking"])  # reasoning is billed as output: count it
        calls = []
        for call in message.get("tool_calls") or []:
            calls.append(openai_tool_call(call, index=self._tool_calls))
            self._tool_calls += 1
            self.text_parts.append(calls[-1]["function"]["arguments"])
        if calls:
            delta["tool_calls"] = calls
        return delta
