"""The OpenAI wire format of the course server: request schemas, response and stream-chunk shapes, errors,
and turning generated token ids into text deltas.

Kept apart from the HTTP plumbing (server.py) so a student can hold it next to OpenAI's API reference
(https://platform.openai.com/docs/api-reference/chat) and compare field by field. Only what the course
needs is implemented; the rest is refused with a clear 400 instead of being silently ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


# ---- errors ---------------------------------------------------------------------------------------
class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "code"}} with an HTTP status.

    The `openai` client turns the status into its exception classes (400 BadRequestError,
    401 AuthenticationError, 404 NotFoundError, 413/504 APIStatusError, 429 RateLimitError) and shows the
    message, so the message says what was wrong and how to fix it."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code)


def error_body(message: str, type: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


# ---- requests -------------------------------------------------------------------------------------
class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    """Fields shared by /v1/chat/completions and /v1/completions. Unknown fields are ignored (clients
    send fields a small server has no use for, e.g. `user`); unsupported ones that would change the
    answer (`n` > 1, `logprobs`) are refused in `check_supported`."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)  # OpenAI's default: sampling; 0 = greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: Any = None

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise APIError(400, "stop takes up to 4 non-empty strings", code="invalid_stop")
        return stops

    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def check_supported(self) -> None:
        if self.n != 1:
            raise APIError(400, f"n={self.n} is not supported: this server returns one choice per request "
                                "(send n requests instead)", code="unsupported_parameter")
        if self.logprobs:
            raise APIError(400, "logprobs are not supported by this server", code="unsupported_parameter")

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text: a string, or its text parts joined (images and other parts are refused)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(part.type != "text" for part in self.content):
            raise APIError(400, "only text content parts are supported", code="unsupported_content")
        return "".join(part.text or "" for part in self.content)


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def conversation(self) -> list[dict[str, str]]:
        # "developer" is OpenAI's newer name for "system"; chat templates know only "system".
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in self.messages]


class CompletionRequest(_Common):
    prompt: str | list[str]

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise APIError(400, "send one prompt per request (a list of prompts is not supported)",
                           code="unsupported_parameter")
        return self.prompt[0]


def parse_request(schema: type[BaseModel], data: Any) -> Any:
    """Validate a decoded JSON body; a schema error becomes a 400 that names the field (OpenAI answers
    400, not FastAPI's default 422)."""
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise APIError(400, f"invalid request: {where}: {first['msg']}", code="invalid_request") from None


# ---- responses ------------------------------------------------------------------------------------
def new_id(kind: Literal["chat", "completion"]) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def full_response(kind: str, request_id: str, model: str, text: str, finish_reason: str,
                  prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """A non-streaming answer: `chat.completion` or `text_completion`."""
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish_reason}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    return {"id": request_id, "object": obj, "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage(prompt_tokens, completion_tokens)}


def chunk(kind: str, request_id: str, created: int, model: str, text: str | None = None,
          finish_reason: str | None = None, first: bool = False, with_usage_field: bool = False) -> dict[str, Any]:
    """One streamed chunk (`data: {...}`): a text delta, or the last one carrying `finish_reason`.

    A chat stream's first delta carries the role, as OpenAI's does; when the client asked for usage, every
    chunk has `"usage": null` and one extra chunk at the end (`usage_chunk`) carries the numbers."""
    if kind == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text is not None:
            delta["content"] = text
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    body = {"id": request_id, "object": obj, "created": created, "model": model, "choices": [choice]}
    if with_usage_field:
        body["usage"] = None
    return body


def usage_chunk(kind: str, request_id: str, created: int, model: str, prompt_tokens: int,
                completion_tokens: int) -> dict[str, Any]:
    """The chunk after the last one when `stream_options.include_usage` is set: no choices, only usage."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    return {"id": request_id, "object": obj, "created": created, "model": model, "choices": [],
            "usage": usage(prompt_tokens, completion_tokens)}


# ---- tokens to text -------------------------------------------------------------------------------
class TextAssembler:
    """Turns a request's generated token ids into text deltas, honouring stop strings.

    Decoding token by token is wrong in two ways: one character can span tokens (a Chinese character is
    often 2-3 byte-level tokens, and half of it decodes to U+FFFD), and a tokenizer may render a token
    differently at the start of a string. So the whole output is decoded each time and only what is new
    and final is sent. With stop strings, the last `longest stop - 1` characters are held back until it is
    clear they do not begin a stop string, so a stop string split across tokens is never half-sent."""

    def __init__(self, tokenizer, stop: list[str] | None = None):
        self.tokenizer = tokenizer
        self.stop = stop or []
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.text = ""  # the text so far (cut at a stop string once one is found)
        self.sent = 0  # characters of self.text already handed out
        self.stopped = False  # a stop string was found

    def add(self, token_id: int) -> str:
        """Add one generated token; returns the text that can be sent now (maybe '')."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for its next byte
            return ""
        self.text = text
        for stop in self.stop:
            found = text.find(stop)
            if found != -1:
                self.text, self.stopped = text[:found], True
                return self.flush()
        ready = max(self.sent, len(text) - self.hold)
        delta, self.sent = text[self.sent:ready], ready
        return delta

    def flush(self) -> str:
        """Everything not sent yet (at the end of the request)."""
        delta, self.sent = self.text[self.sent:], len(self.text)
        return delta
