"""The course's own OpenAI-compatible inference server (read in Lab-2.4; started by `make serve`).

    python -m common_utils.inference.server --port 8000 [--adapter PATH]

Any OpenAI client talks to it: `OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=$COURSE_API_KEY)`.

Routes
    GET  /v1/models             the one model served; its id is the course registry key
    POST /v1/chat/completions   chat, non-streaming or SSE streaming (`data: {chunk}` ... `data: [DONE]`)
    POST /v1/completions        plain-text completion, the same two ways
    GET  /health                liveness/readiness for probes (no key)
    GET  /metrics               Prometheus text format (no key; bind to loopback, scrape locally)

How a request flows
    HTTP (event loop) ── validate, tokenize ──> Engine.submit ──> one worker thread batches every running
    request into one model step (server_engine.py, Lab-2.3's engine) ──> token events ──> back on the
    event loop: detokenize, stop strings, SSE chunks (server_protocol.py).

What makes it a service rather than a demo (each item has a test in tests/test_inference_server.py)
    * API key on every /v1 route, compared in constant time (`hmac.compare_digest`): 401 otherwise.
    * Validation with OpenAI-shaped 4xx errors: malformed JSON 400, unknown model 404, max_tokens over the
      limit 400, prompt over the context length 400, body too large 413.
    * Back-pressure: a bounded queue; when it is full, 429 with `Retry-After` instead of unbounded latency.
    * Cancel on disconnect: a stream's `finally` (and a watcher for non-streaming requests) sets the
      request's cancel flag; the engine drops it before its next step, so nobody's tokens are generated for
      a client that left (measured in issue 15: the next request took 24.9 s without this, 1.55 s with it).
    * A per-request timeout (504, or an error event inside a stream).
    * One JSON log line per request (id, route, status, tokens, TTFT, duration), without prompt text unless
      `--log-prompts` is given: prompts may hold personal data.
    * Bound to 127.0.0.1 only: exposing it is a deployment decision (a reverse proxy with TLS), not a flag.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from common_utils.inference.server_engine import (
    Engine,
    ErrorEvent,
    FinishEvent,
    QueueFullError,
    ServedRequest,
    TokenEvent,
)
from common_utils.inference.server_metrics import ServerMetrics
from common_utils.inference.server_protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    TextAssembler,
    chunk,
    error_body,
    full_response,
    new_id,
    parse_request,
    usage_chunk,
)

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

HOST = "127.0.0.1"  # loopback only, always
API_KEY_ENV = "COURSE_API_KEY"
PORT_ENV = "PORT"
DEFAULT_MODEL = "smollm2-135m-instruct"
ROUTES = ("/v1/models", "/v1/chat/completions", "/v1/completions", "/health", "/metrics")
LOG_SCOPE_KEY = "course.log"  # where a handler leaves fields for the request's log line

logger = logging.getLogger("common_utils.inference.server")


@dataclass(frozen=True)
class Settings:
    """Everything that configures a server; `main()` fills it from the command line and environment."""

    api_key: str  # required: $COURSE_API_KEY
    model: str = DEFAULT_MODEL  # course registry key; also the model id clients must send
    adapter: str | None = None  # a saved LoRA adapter folder, merged into the base model at start-up
    port: int = 8000
    max_batch: int = 8  # requests per model step
    max_queue: int = 64  # requests waiting for a batch slot before 429
    max_model_len: int = 2048  # context length: prompt + max_tokens (capped by the model's own limit)
    max_tokens_limit: int = 1024  # the largest max_tokens a client may ask for
    default_max_tokens: int = 256  # when the client sends none
    kv_cache_tokens: int = 8192  # KV pool size in tokens (at least max_model_len)
    block_size: int = 16  # tokens per KV block
    max_body_bytes: int = 1_000_000
    request_timeout_s: float = 300.0  # from arrival to the last token
    retry_after_s: int = 1  # the Retry-After a 429 carries
    stream_ping_s: float = 15.0  # SSE comment lines keep idle proxies from closing a long stream
    threads: int | None = None  # torch threads of the engine thread (None: leave as is)
    log_prompts: bool = False  # put prompt text in the log (off: prompts may hold personal data)
    cancel_on_disconnect: bool = True  # off only to measure what cancelling saves (Lab-2.4 ablation)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Settings with the API key from $COURSE_API_KEY and the port from $PORT (default 8000)."""
        values: dict[str, Any] = {"api_key": os.environ.get(API_KEY_ENV, ""),
                                  "port": int(os.environ.get(PORT_ENV) or 8000)}
        return cls(**{**values, **overrides})


def load_model(settings: Settings):
    """(model, tokenizer) of the registry key, with the LoRA adapter merged in when one is given.

    Merging (`merge_and_unload`) makes the served model a plain transformers model again: no adapter
    overhead per step, and the paged attention of the engine plugs in as for the base model."""
    from common_utils.core.models import load_causal_lm

    model, tokenizer = load_causal_lm(settings.model)
    if settings.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, settings.adapter).merge_and_unload()
    return model.eval(), tokenizer


class RequestTimeout(Exception):
    """A request ran past `request_timeout_s`."""


class EngineFailure(Exception):
    """The engine reported an error for a request."""


@dataclass
class _Job:
    """One request on the HTTP side: its engine request, the events coming back, its text so far."""

    id: str
    kind: str  # "chat" or "completion"
    request: ServedRequest
    events: asyncio.Queue
    assembler: TextAssembler
    started: float
    deadline: float
    include_usage: bool = False
    finish_reason: str | None = None
    ttft_s: float | None = None
    log: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_tokens(self) -> int:
        return len(self.request.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return len(self.assembler.ids)


class CourseServer:
    """The server's state and request handling; `create_app` wires it to FastAPI routes."""

    def __init__(self, settings: Settings, model, tokenizer):
        if not settings.api_key:
            raise ValueError(f"no API key: set ${API_KEY_ENV} (every /v1 route requires it), e.g.\n"
                             f"  export {API_KEY_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe(24))')")
        # the key actually loaded: a hub model that was unreachable falls back to the embedded one
        self.model_id = getattr(model, "course_model_key", settings.model)
        self.tokenizer = tokenizer
        limit = getattr(model.config, "max_position_embeddings", None) or settings.max_model_len
        self.max_model_len = min(settings.max_model_len, limit)
        self.settings = replace(settings, max_model_len=self.max_model_len,
                                kv_cache_tokens=max(settings.kv_cache_tokens, self.max_model_len))
        self.metrics = ServerMetrics()
        self.engine = Engine(model, self._eos_ids(model, tokenizer), max_batch=settings.max_batch,
                             max_queue=settings.max_queue, kv_cache_tokens=self.settings.kv_cache_tokens,
                             block_size=settings.block_size, threads=settings.threads, metrics=self.metrics)
        self._ids = itertools.count()

    @staticmethod
    def _eos_ids(model, tokenizer) -> set[int]:
        """Every token that ends a reply: the tokenizer's EOS and the generation config's (int or list)."""
        configured = getattr(model.generation_config, "eos_token_id", None)
        ids = set(configured if isinstance(configured, list) else [configured])
        ids.add(tokenizer.eos_token_id)
        return {i for i in ids if i is not None}

    # ---- validation ---------------------------------------------------------------------------
    def _prompt_ids(self, params: ChatCompletionRequest | CompletionRequest) -> list[int]:
        try:
            if isinstance(params, ChatCompletionRequest):
                ids = self.tokenizer.apply_chat_template(params.conversation(), add_generation_prompt=True,
                                                         return_dict=True)["input_ids"]
            else:
                ids = self.tokenizer(params.prompt_text())["input_ids"]
        except APIError:
            raise
        except Exception as error:  # noqa: BLE001 - a chat template rejecting the messages is the client's error
            raise APIError(400, f"could not build the prompt: {error}", code="invalid_prompt") from None
        if not ids:
            raise APIError(400, "the prompt is empty", code="invalid_prompt")
        return list(ids)

    def _budget(self, prompt_tokens: int, requested: int | None) -> int:
        """The request's max_tokens, or a 400 that says which limit it breaks and how to fix it."""
        limit, context = self.settings.max_tokens_limit, self.max_model_len
        if requested is not None and requested > limit:
            raise APIError(400, f"max_tokens={requested} is over this server's limit of {limit}; ask for "
                                f"fewer (or start the server with --max-tokens-limit)", code="max_tokens_too_large")
        if prompt_tokens >= context:
            raise APIError(400, f"This model's maximum context length is {context} tokens; your prompt has "
                                f"{prompt_tokens}. Shorten the prompt.", code="context_length_exceeded")
        budget = requested or min(self.settings.default_max_tokens, context - prompt_tokens)
        if prompt_tokens + budget > context:
            raise APIError(400, f"This model's maximum context length is {context} tokens; you asked for "
                                f"{prompt_tokens + budget} ({prompt_tokens} in the prompt, {budget} in max_tokens). "
                                "Shorten the prompt or lower max_tokens.", code="context_length_exceeded")
        return budget

    # ---- requests -----------------------------------------------------------------------------
    async def complete(self, http: Request, kind: str) -> Response:
        """Shared by both routes: validate, submit to the engine, answer whole or as a stream."""
        log = http.scope.setdefault(LOG_SCOPE_KEY, {})
        body = await read_json(http, self.settings.max_body_bytes)
        params = parse_request(ChatCompletionRequest if kind == "chat" else CompletionRequest, body)
        if params.model != self.model_id:
            raise APIError(404, f"The model {params.model!r} does not exist; this server serves "
                                f"{self.model_id!r} (see GET /v1/models).", code="model_not_found")
        params.check_supported()
        stops = params.stop_strings()
        prompt_ids = self._prompt_ids(params)
        max_tokens = self._budget(len(prompt_ids), params.requested_max_tokens())
        job = self._submit(kind, params, prompt_ids, max_tokens, stops)
        job.log = log
        log.update(id=job.id, stream=params.stream, prompt_tokens=len(prompt_ids), max_tokens=max_tokens)
        if self.settings.log_prompts:
            log["prompt"] = body.get("messages") if kind == "chat" else body.get("prompt")
        headers = {"X-Request-Id": job.id}
        if params.stream:
            return EventSourceResponse(self._stream(job), sep="\n", ping=self.settings.stream_ping_s,
                                       headers=headers)
        return await self._whole(http, job, headers)

    def _submit(self, kind, params, prompt_ids, max_tokens, stops) -> _Job:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        request = ServedRequest(next(self._ids), prompt_ids, max_tokens, temperature=params.temperature,
                                top_p=params.top_p, seed=params.seed,
                                on_event=lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
        now = time.perf_counter()
        job = _Job(new_id(kind), kind, request, events, TextAssembler(self.tokenizer, stops), now,
                   now + self.settings.request_timeout_s, include_usage=params.include_usage())
        try:
            self.engine.submit(request)
        except QueueFullError as error:
            raise APIError(429, f"the server is busy ({error}); retry after {self.settings.retry_after_s} s",
                           type="rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(self.settings.retry_after_s)}) from None
        except ValueError as error:
            raise APIError(400, str(error), code="context_length_exceeded") from None
        return job

    async def _deltas(self, job: _Job) -> AsyncIterator[tuple[str, str | None]]:
        """(text, finish_reason) pairs from the engine's events: text deltas with finish_reason None, then
        one last pair with the finish reason ('stop': EOS or a stop string; 'length': max_tokens)."""
        while True:
            remaining = job.deadline - time.perf_counter()
            try:
                event = await asyncio.wait_for(job.events.get(), timeout=max(remaining, 0.0))
            except TimeoutError:
                self.engine.cancel(job.request)
                raise RequestTimeout(f"the request ran past the server's timeout of "
                                     f"{self.settings.request_timeout_s:.0f} s") from None
            if isinstance(event, TokenEvent):
                if job.ttft_s is None:
                    job.ttft_s = time.perf_counter() - job.started
                text = job.assembler.add(event.token_id)
                if job.assembler.stopped:  # a stop string: the client has its answer, stop generating
                    self.engine.cancel(job.request)
                    job.finish_reason = "stop"
                    yield text, "stop"
                    return
                if text:
                    yield text, None
            elif isinstance(event, FinishEvent):
                job.finish_reason = "length" if event.reason == "length" else "stop"
                yield job.assembler.flush(), job.finish_reason
                return
            elif isinstance(event, ErrorEvent):
                raise EngineFailure(event.message)

    async def _whole(self, http: Request, job: _Job, headers: dict[str, str]) -> Response:
        """A non-streaming answer. A watcher notices a client that hangs up while it waits (the openai
        client's own timeout, a closed notebook) and cancels the generation as a stream's `finally` does."""

        async def collect() -> str:
            return "".join([text async for text, _ in self._deltas(job)])

        work = asyncio.ensure_future(collect())
        hang_up = asyncio.ensure_future(_wait_for_disconnect(http))
        try:
            done, _ = await asyncio.wait({work, hang_up}, return_when=asyncio.FIRST_COMPLETED)
            if work not in done:
                job.log.update(client_disconnected=True)
                return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
            text = work.result()
        except RequestTimeout as error:
            raise APIError(504, str(error), type="timeout_error", code="request_timeout") from None
        except EngineFailure as error:
            raise APIError(500, str(error), type="server_error", code="engine_error") from None
        finally:
            work.cancel()
            hang_up.cancel()
            if job.finish_reason is None and self.settings.cancel_on_disconnect:
                self.engine.cancel(job.request)
            self._log_result(job)
        body = full_response(job.kind, job.id, self.model_id, text, job.finish_reason or "stop",
                             job.prompt_tokens, job.completion_tokens)
        return JSONResponse(body, headers=headers)

    async def _stream(self, job: _Job) -> AsyncIterator[dict[str, str]]:
        """The SSE body in OpenAI's wire format: `data: {chunk}` events, the last chunk with finish_reason,
        a usage chunk if asked for, then `data: [DONE]`. Its `finally` runs when the client disconnects
        (sse-starlette cancels the generator): that is where generation is cancelled."""
        created, usage_field = int(time.time()), job.include_usage

        def event(payload: dict[str, Any]) -> dict[str, str]:
            return {"data": json.dumps(payload, ensure_ascii=False)}

        try:
            if job.kind == "chat":  # OpenAI's first chat chunk carries the role
                yield event(chunk("chat", job.id, created, self.model_id, text="", first=True,
                                  with_usage_field=usage_field))
            async for text, finish in self._deltas(job):
                if text:
                    yield event(chunk(job.kind, job.id, created, self.model_id, text=text,
                                      with_usage_field=usage_field))
                if finish:
                    yield event(chunk(job.kind, job.id, created, self.model_id, finish_reason=finish,
                                      with_usage_field=usage_field))
            if job.include_usage:
                yield event(usage_chunk(job.kind, job.id, created, self.model_id, job.prompt_tokens,
                                        job.completion_tokens))
            yield {"data": "[DONE]"}
        except RequestTimeout as error:  # the status line is sent already: report the error in-stream
            yield event(error_body(str(error), "timeout_error", "request_timeout"))
        except EngineFailure as error:
            yield event(error_body(str(error), "server_error", "engine_error"))
        finally:
            if job.finish_reason is None:
                job.log.update(client_disconnected=True)
                if self.settings.cancel_on_disconnect:
                    self.engine.cancel(job.request)
            self._log_result(job)

    def _log_result(self, job: _Job) -> None:
        job.log.update(completion_tokens=job.completion_tokens, finish_reason=job.finish_reason,
                       ttft_s=None if job.ttft_s is None else round(job.ttft_s, 4))

    def models(self) -> dict[str, Any]:
        card = {"id": self.model_id, "object": "model", "created": 0, "owned_by": "llm-course",
                "max_model_len": self.max_model_len,
                "adapter": os.path.basename(self.settings.adapter.rstrip("/")) if self.settings.adapter else None}
        return {"object": "list", "data": [card]}

    def health(self) -> tuple[int, dict[str, Any]]:
        stats = self.engine.stats()
        body = {"status": "ok" if stats.alive else "engine stopped", "model": self.model_id,
                "waiting": stats.waiting, "running": stats.running}
        return (200 if stats.alive else 503), body


# ---- HTTP helpers ---------------------------------------------------------------------------------
async def read_json(http: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object: 413 past `limit` bytes (checked before and while reading, so a
    huge body is never held in memory), 400 when it is not a JSON object."""
    declared = http.headers.get("content-length", "")
    too_large = APIError(413, f"the request body is over this server's limit of {limit} bytes",
                         code="request_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for part in http.stream():
        body += part
        if len(body) > limit:
            raise too_large
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise APIError(400, f"the body is not valid JSON: {error}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object", code="invalid_json")
    return data


async def _wait_for_disconnect(http: Request) -> None:
    """Return when the client closes the connection (the body is read already, so the next ASGI message
    can only be `http.disconnect`)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


def api_key_dependency(api_key: str):
    """A FastAPI dependency that accepts `Authorization: Bearer <key>` only. `hmac.compare_digest` takes
    the same time wherever the first wrong character is, so response timing cannot reveal the key."""
    expected = api_key.encode()

    async def require_api_key(http: Request) -> None:
        scheme, _, given = http.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise APIError(401, f"missing or wrong API key: send `Authorization: Bearer ${API_KEY_ENV}`",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    return require_api_key


class AccessLogMiddleware:
    """Pure ASGI middleware (streams pass through untouched): per request, count it by route and status,
    time it, and write one JSON log line with what the handler left in the scope (never the prompt)."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"  # bounded label values
        fields: dict[str, Any] = {"route": route, "method": scope["method"]}
        scope[LOG_SCOPE_KEY] = fields
        status = {"code": 500}
        start = time.perf_counter()

        async def send_and_watch(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            duration = time.perf_counter() - start
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.duration.labels(route).observe(duration)
            level = logging.DEBUG if route in ("/health", "/metrics") else logging.INFO
            logger.log(level, "request", extra={"fields": {**fields, "status": status["code"],
                                                           "duration_s": round(duration, 4)}})


def create_app(settings: Settings, model=None, tokenizer=None) -> FastAPI:
    """The FastAPI app. `model`/`tokenizer` default to the registry key's (plus the adapter); tests and
    notebooks may pass their own. The engine switches the model to paged attention, so pass a model that
    is not also used with `generate` elsewhere. The engine thread starts and stops with the app's
    lifespan (uvicorn runs it; so does `with TestClient(app)`)."""
    if model is None:
        model, loaded_tokenizer = load_model(settings)
        tokenizer = tokenizer or loaded_tokenizer
    if tokenizer is None:
        from common_utils.core.models import load_tokenizer

        tokenizer = load_tokenizer(settings.model)
    server = CourseServer(settings, model, tokenizer)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.engine.start()
        try:
            yield
        finally:
            server.engine.stop()

    app = FastAPI(title="LLM course inference server", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.server = server

    @app.exception_handler(APIError)
    async def api_error(_: Request, error: APIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(error.detail), "invalid_request_error"), status_code=error.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return JSONResponse(error_body(f"internal error: {type(error).__name__}", "server_error"), status_code=500)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(api_key_dependency(settings.api_key))])

    @v1.get("/models")
    async def list_models() -> dict[str, Any]:
        return server.models()

    @v1.post("/chat/completions")
    async def chat_completions(http: Request) -> Response:
        return await server.complete(http, "chat")

    @v1.post("/completions")
    async def completions(http: Request) -> Response:
        return await server.complete(http, "completion")

    app.include_router(v1)

    @app.get("/health")
    async def health() -> JSONResponse:
        status, body = server.health()
        return JSONResponse(body, status_code=status)

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(server.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(AccessLogMiddleware, metrics=server.metrics)
    return app


# ---- command line ---------------------------------------------------------------------------------
class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, event, and the record's `fields` (see AccessLogMiddleware)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created)),
                "level": record.levelname.lower(), "event": record.getMessage(),
                **getattr(record, "fields", {})}
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def default_threads() -> int:
    """$COURSE_NUM_THREADS, else all cores but one: the event loop and tokenizer need a core too, and on a
    loaded 2-core machine 2 torch threads ran 4x slower than 1 (COURSE_DESIGN §7; vLLM does the same)."""
    return int(os.environ.get("COURSE_NUM_THREADS", "0")) or max(1, (os.cpu_count() or 1) - 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = Settings(api_key="unused")
    p = argparse.ArgumentParser(prog="python -m common_utils.inference.server",
                                description="The course's OpenAI-compatible server (127.0.0.1 only). "
                                            f"The API key comes from ${API_KEY_ENV}.")
    p.add_argument("--port", type=int, default=int(os.environ.get(PORT_ENV) or 8000), help="default: $PORT or 8000")
    p.add_argument("--model", default=DEFAULT_MODEL, help="course registry key (also the model id)")
    p.add_argument("--adapter", default=None, help="a saved LoRA adapter folder to merge into the model")
    p.add_argument("--max-batch", type=int, default=defaults.max_batch)
    p.add_argument("--max-queue", type=int, default=defaults.max_queue)
    p.add_argument("--max-model-len", type=int, default=defaults.max_model_len)
    p.add_argument("--max-tokens-limit", type=int, default=defaults.max_tokens_limit)
    p.add_argument("--kv-cache-tokens", type=int, default=defaults.kv_cache_tokens)
    p.add_argument("--request-timeout", type=float, default=defaults.request_timeout_s)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores but one)")
    p.add_argument("--log-prompts", action="store_true", help="log prompt text (off by default: personal data)")
    p.add_argument("--no-cancel-on-disconnect", dest="cancel_on_disconnect", action="store_false",
                   help="keep generating for clients that hung up (only to measure what cancelling saves)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not os.environ.get(API_KEY_ENV):
        sys.exit(f"${API_KEY_ENV} is not set; every /v1 route requires it. For example:\n"
                 f"  export {API_KEY_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    from common_utils.core.runtime import set_threads

    threads = set_threads(args.threads or default_threads())
    settings = Settings.from_env(model=args.model, adapter=args.adapter, port=args.port, max_batch=args.max_batch,
                                 max_queue=args.max_queue, max_model_len=args.max_model_len,
                                 max_tokens_limit=args.max_tokens_limit, kv_cache_tokens=args.kv_cache_tokens,
                                 request_timeout_s=args.request_timeout, threads=threads,
                                 log_prompts=args.log_prompts, cancel_on_disconnect=args.cancel_on_disconnect)
    app = create_app(settings)
    logger.info("ready", extra={"fields": {"url": f"http://{HOST}:{settings.port}/v1", "model": settings.model,
                                           "adapter": settings.adapter, "threads": threads,
                                           "max_batch": settings.max_batch}})
    uvicorn.run(app, host=HOST, port=settings.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
