"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.4-FastAPI_Service/01-Basic_API.ipynb
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.4-FastAPI_Service/02-Streaming_and_Async.ipynb
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.4-FastAPI_Service/04-Monitoring_Security_Deploy.ipynb

Edit the notebook's `#@save fastapi_service` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.4-FastAPI_Service/01-Basic_API.ipynb ----
import time
import uuid

import torch
from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    """The request body of /v1/chat/completions: the few fields this server uses. Pydantic validates the JSON
    before our code runs (a missing `messages` or `max_tokens: 0` is refused with 422 by FastAPI)."""

    model_config = ConfigDict(extra="ignore")  # clients send fields a small server does not use (`user` ...)

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int = Field(16, ge=1, le=1024)
    temperature: float = Field(0.0, ge=0.0, le=2.0)  # this server decodes greedily whatever is asked
    stream: bool = False


def chat_prompt_ids(tokenizer, messages) -> list[int]:
    """The chat template applied to the conversation, ending where the assistant's reply begins."""
    messages = [m if isinstance(m, dict) else m.model_dump() for m in messages]
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"])


def finish_reason(new_ids: list[int], max_tokens: int, eos_ids: set[int]) -> str:
    """OpenAI's finish_reason: 'stop' when the model ended its reply (EOS), 'length' when max_tokens cut it."""
    return "stop" if new_ids and new_ids[-1] in eos_ids else "length"


@torch.inference_mode()
def greedy_chat(model, tokenizer, messages, max_tokens: int) -> dict:
    """One greedy reply with `model.generate`: its text, token counts and finish reason."""
    prompt = torch.tensor([chat_prompt_ids(tokenizer, messages)], device=model.device)
    output = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_tokens,
                            do_sample=False, pad_token_id=tokenizer.pad_token_id)
    new_ids = output[0, prompt.shape[1]:].tolist()
    return {"text": tokenizer.decode(new_ids, skip_special_tokens=True), "prompt_tokens": prompt.shape[1],
            "completion_tokens": len(new_ids), "finish_reason": finish_reason(new_ids, max_tokens,
                                                                              {tokenizer.eos_token_id})}


def chat_completion_body(model_id: str, reply: dict) -> dict:
    """The non-streaming answer in OpenAI's shape (object `chat.completion`)."""
    usage = {"prompt_tokens": reply["prompt_tokens"], "completion_tokens": reply["completion_tokens"],
             "total_tokens": reply["prompt_tokens"] + reply["completion_tokens"]}
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply["text"]},
                         "logprobs": None, "finish_reason": reply["finish_reason"]}],
            "usage": usage}

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.4-FastAPI_Service/01-Basic_API.ipynb ----
import threading

from fastapi import FastAPI, HTTPException


def build_basic_app(model, tokenizer, model_id: str) -> FastAPI:
    """The smallest OpenAI-compatible server: one route, non-streaming, greedy `generate` under a lock.

    The route is a plain `def`: FastAPI runs it in a worker thread, so the event loop stays free while the
    model computes. The lock lets one `generate` run at a time (02 measures what that costs)."""
    app = FastAPI(title="Lab-2.4 basic server")
    lock = threading.Lock()

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatRequest) -> dict:
        if request.model != model_id:
            raise HTTPException(404, f"model {request.model!r} not found; this server serves {model_id!r}")
        with lock:
            reply = greedy_chat(model, tokenizer, request.messages, request.max_tokens)
        return chat_completion_body(model_id, reply)

    return app

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.4-FastAPI_Service/02-Streaming_and_Async.ipynb ----
import json


def sse_event(payload) -> str:
    """One Server-Sent Event as OpenAI streams it: `data: <json>` and a blank line (`data: [DONE]` at the end)."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


def chat_chunk(request_id: str, created: int, model_id: str, content: str | None = None, role: bool = False,
               finish: str | None = None, usage_field: bool = False) -> dict:
    """One `chat.completion.chunk`: a text delta (the first one also carries the role), or the last one with
    an empty delta and `finish_reason`. With `stream_options.include_usage` every chunk has `"usage": null`."""
    delta = ({"role": "assistant"} if role else {}) | ({} if content is None else {"content": content})
    body = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model_id,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    return body | ({"usage": None} if usage_field else {})


def usage_chunk(request_id: str, created: int, model_id: str, prompt_tokens: int, completion_tokens: int) -> dict:
    """The extra chunk after the finish chunk when the client asked for usage: no choices, only the counts."""
    return {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model_id,
            "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                     "total_tokens": prompt_tokens + completion_tokens}}

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.4-FastAPI_Service/02-Streaming_and_Async.ipynb ----
import contextlib
import threading

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer


class StopWhenSet(StoppingCriteria):
    """Ends `generate` at its next step once `event` is set: how a server stops generating for a client
    that hung up (a thread cannot be killed; it has to be asked)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class BackgroundGeneration:
    """Greedy `generate` in a worker thread; its text arrives piece by piece through a TextIteratorStreamer.

    `lock` (a threading.Lock or None) is held for the whole generation: with it, requests take turns.
    `cancel` is the event a stream sets when its client goes away."""

    def __init__(self, model, tokenizer, messages, max_tokens: int, lock=None, timeout_s: float = 600.0):
        self.prompt_ids = chat_prompt_ids(tokenizer, messages)
        self.max_tokens = max_tokens
        self.eos_ids = {tokenizer.eos_token_id}
        self.cancel = threading.Event()
        self.new_ids: list[int] = []
        self.streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                             timeout=timeout_s)
        self.thread = threading.Thread(target=self._run, args=(model, tokenizer, lock), daemon=True)
        self.thread.start()

    def _run(self, model, tokenizer, lock) -> None:
        prompt = torch.tensor([self.prompt_ids], device=model.device)
        try:
            with lock or contextlib.nullcontext(), torch.inference_mode():
                output = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                        max_new_tokens=self.max_tokens, streamer=self.streamer,
                                        stopping_criteria=StoppingCriteriaList([StopWhenSet(self.cancel)]),
                                        pad_token_id=tokenizer.pad_token_id)
            self.new_ids = output[0, prompt.shape[1]:].tolist()
        finally:
            self.streamer.end()  # a failed generate must not leave the reader waiting

    @property
    def finish_reason(self) -> str:
        return finish_reason(self.new_ids, self.max_tokens, self.eos_ids)

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.4-FastAPI_Service/02-Streaming_and_Async.ipynb ----
import asyncio
import threading
import time
import uuid

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel


class StreamOptions(BaseModel):
    include_usage: bool = False


class StreamingChatRequest(ChatRequest):
    stream_options: StreamOptions | None = None


def build_streaming_app(model, tokenizer, model_id: str, use_lock: bool = True,
                        cancel_on_disconnect: bool = True) -> FastAPI:
    """01's server plus `stream=True`: SSE chunks in OpenAI's wire format, produced while `generate` runs.

    use_lock: one generation at a time (requests queue for the lock) or all at once (they share the cores).
    cancel_on_disconnect: a stream whose client went away stops its generation (the generator's `finally`)."""
    app = FastAPI(title="Lab-2.4 streaming server")
    lock = threading.Lock() if use_lock else None

    async def events(job: BackgroundGeneration, request: StreamingChatRequest):
        request_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        usage = bool(request.stream_options and request.stream_options.include_usage)
        try:
            yield sse_event(chat_chunk(request_id, created, model_id, content="", role=True, usage_field=usage))
            pieces = iter(job.streamer)
            while (piece := await asyncio.to_thread(next, pieces, None)) is not None:  # off the event loop
                if piece:
                    yield sse_event(chat_chunk(request_id, created, model_id, content=piece, usage_field=usage))
            await asyncio.to_thread(job.thread.join)  # new_ids is set when the thread ends
            yield sse_event(chat_chunk(request_id, created, model_id, finish=job.finish_reason, usage_field=usage))
            if usage:
                yield sse_event(usage_chunk(request_id, created, model_id, len(job.prompt_ids), len(job.new_ids)))
            yield sse_event("[DONE]")
        finally:  # also runs when the client disconnects: the response task is cancelled
            if cancel_on_disconnect:
                job.cancel.set()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: StreamingChatRequest):
        if request.model != model_id:
            raise HTTPException(404, f"model {request.model!r} not found; this server serves {model_id!r}")
        job = BackgroundGeneration(model, tokenizer, request.messages, request.max_tokens, lock)
        if request.stream:
            return StreamingResponse(events(job, request), media_type="text/event-stream")
        await asyncio.to_thread(job.thread.join)
        reply = {"text": tokenizer.decode(job.new_ids, skip_special_tokens=True), "completion_tokens": len(job.new_ids),
                 "prompt_tokens": len(job.prompt_ids), "finish_reason": job.finish_reason}
        return chat_completion_body(model_id, reply)

    return app

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.4-FastAPI_Service/04-Monitoring_Security_Deploy.ipynb ----
import math


def histogram_buckets(family) -> list[tuple[float, float]]:
    """(upper bound `le`, cumulative count) of one parsed Prometheus histogram, sorted; the last is +Inf.

    Prometheus buckets are cumulative: the `le="0.5"` bucket counts every observation <= 0.5 s."""
    return sorted((float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket"))


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """The q-quantile estimated from cumulative buckets, as PromQL's `histogram_quantile` does: find the first
    bucket whose cumulative count reaches q x total, and interpolate linearly inside it (observations are
    assumed spread evenly between its bounds; the first bucket starts at 0). A quantile that falls in the
    +Inf bucket returns the highest finite bound. NaN when nothing was observed."""
    total = buckets[-1][1] if buckets else 0.0
    if total == 0:
        return math.nan
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound
