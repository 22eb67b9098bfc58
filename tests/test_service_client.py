"""common_utils.inference.service_client: serving an app in a thread, timing streamed requests through the real
`openai` client (concurrently), parsing /metrics, and the server's --no-cancel-on-disconnect flag.

A tiny FastAPI app stands in for a model server (fast, no model): it streams a fixed number of chunks in
OpenAI's wire format with a delay per chunk, and answers 429 past a concurrency bound."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import contextmanager

import pytest

for _module in ("fastapi", "uvicorn", "openai", "prometheus_client"):
    pytest.importorskip(_module, reason="needs the `serve` extra: pip install -e '.[serve]'")

from common_utils.inference.service_client import (  # noqa: E402
    ServiceError,
    demo_conversations,
    parse_metrics,
    run_clients,
    run_sync,
    sample_value,
    serve_app,
    server_command,
    wait_healthy,
    wait_idle,
)

import httpx  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, StreamingResponse  # noqa: E402

CHUNKS, DELAY_S = 5, 0.03


def fake_server(max_running: int = 100, delay_s: float = DELAY_S) -> FastAPI:
    """Streams CHUNKS words, `delay_s` apart; at most `max_running` streams at once, else 429 + Retry-After."""
    app = FastAPI()
    state = {"running": 0}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "running": state["running"], "waiting": 0}

    @app.post("/v1/chat/completions")
    async def chat(http: Request):
        body = await http.json()
        if state["running"] >= max_running:
            return JSONResponse({"error": {"message": "busy", "type": "rate_limit_error", "code": "queue_full"}},
                                status_code=429, headers={"Retry-After": "1"})
        state["running"] += 1

        def chunk(delta: dict, finish: str | None = None, usage: dict | None = None, choices: bool = True) -> str:
            payload = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else [],
                       "usage": usage}
            return f"data: {json.dumps(payload)}\n\n"

        async def events():
            try:
                yield chunk({"role": "assistant", "content": ""})
                for i in range(CHUNKS):
                    await asyncio.sleep(delay_s)
                    yield chunk({"content": f"w{i} "})
                yield chunk({}, finish="length")
                yield chunk({}, usage={"prompt_tokens": 3, "completion_tokens": CHUNKS, "total_tokens": CHUNKS + 3},
                            choices=False)
                yield "data: [DONE]\n\n"
            finally:
                state["running"] -= 1

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def test_serve_app_serves_on_loopback_and_stops() -> None:
    with serve_app(fake_server()) as url:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        assert wait_healthy(url, timeout_s=5) < 5
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=1)


def test_run_clients_times_each_stream_from_the_client_side() -> None:
    with serve_app(fake_server()) as url:
        run = run_clients(f"{url}/v1", "k", "m", demo_conversations(4), concurrency=4, max_tokens=CHUNKS)
    assert run.statuses == [200] * 4 and run.tokens == 4 * CHUNKS
    for result in run.results:
        assert result.text == "".join(f"w{i} " for i in range(CHUNKS)) and result.finish_reason == "length"
        assert result.ttft_s >= DELAY_S * 0.8 and len(result.itl_s) == CHUNKS - 1
        assert all(gap >= DELAY_S * 0.5 for gap in result.itl_s)
    summary = run.summary()
    assert summary["ok"] == 4 and summary["tokens_per_s"] == pytest.approx(run.tokens / run.wall_s)
    # four at once take about one stream's time, not four
    assert run.wall_s < 3 * CHUNKS * DELAY_S + 1.0


def test_concurrency_bounds_requests_in_flight_and_errors_keep_their_status() -> None:
    with serve_app(fake_server(max_running=2)) as url:
        serial = run_clients(f"{url}/v1", "k", "m", demo_conversations(3), concurrency=1, max_tokens=CHUNKS)
        burst = run_clients(f"{url}/v1", "k", "m", demo_conversations(6), concurrency=6, max_tokens=CHUNKS)
    assert serial.statuses == [200] * 3 and serial.wall_s > 3 * CHUNKS * DELAY_S
    assert sorted(set(burst.statuses)) == [200, 429] and burst.statuses.count(200) == 2
    refused = [r for r in burst.results if r.status == 429]
    assert all(r.retry_after == "1" and "busy" in r.error for r in refused)
    assert burst.tokens == 2 * CHUNKS


def test_run_clients_refuses_non_loopback_urls_and_bad_concurrency() -> None:
    with pytest.raises(ValueError, match="loopback"):
        run_clients("http://example.com/v1", "k", "m", demo_conversations(1), 1, 4)
    with pytest.raises(ValueError, match="concurrency"):
        run_clients("http://127.0.0.1:1/v1", "k", "m", demo_conversations(1), 0, 4)


def test_run_sync_works_inside_a_running_event_loop_and_is_bounded() -> None:
    async def answer() -> int:
        await asyncio.sleep(0.01)
        return 42

    async def inside_a_loop() -> int:  # as in a Jupyter cell
        return run_sync(answer, timeout_s=5)

    assert run_sync(answer, timeout_s=5) == 42
    assert asyncio.run(inside_a_loop()) == 42

    async def forever() -> None:
        await asyncio.sleep(60)

    start = time.monotonic()
    with pytest.raises(TimeoutError):
        run_sync(forever, timeout_s=0.2)
    assert time.monotonic() - start < 5


def test_wait_healthy_fails_fast_when_the_process_is_gone() -> None:
    with pytest.raises(ServiceError, match="exited"):
        wait_healthy("http://127.0.0.1:1", timeout_s=30, alive=lambda: False)
    with pytest.raises(ServiceError, match="did not answer"):
        wait_healthy("http://127.0.0.1:1", timeout_s=0.3, poll_s=0.05)


def test_metrics_are_parsed_with_prometheus_clients_parser() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    registry = CollectorRegistry()
    requests = Counter("demo_requests", "requests", ["status"], registry=registry)
    latency = Histogram("demo_latency_seconds", "latency", buckets=(0.1, 1.0), registry=registry)
    requests.labels("200").inc(3)
    requests.labels("429").inc()
    for value in (0.05, 0.5, 2.0):
        latency.observe(value)
    families = parse_metrics(generate_latest(registry).decode())
    assert sample_value(families, "demo_requests_total", status="200") == 3
    assert sample_value(families, "demo_requests_total") == 4
    assert sample_value(families, "demo_latency_seconds_count") == 3
    assert sample_value(families, "demo_latency_seconds_bucket", le="1.0") == 2
    assert sample_value(families, "missing_total") == 0.0


def test_demo_conversations_and_server_command() -> None:
    conversations = demo_conversations(10)
    assert len(conversations) == 10 and conversations[0] != conversations[1]
    assert conversations[0][0]["role"] == "user"
    with pytest.raises(ValueError):
        demo_conversations(0)
    command = server_command(8123, ["--max-batch", 4], threads=1)
    assert command[1:3] == ["-m", "common_utils.inference.server"]
    assert command[3:] == ["--port", "8123", "--threads", "1", "--max-batch", "4"]


def test_the_server_cli_can_turn_cancel_on_disconnect_off() -> None:
    from common_utils.inference.server import parse_args

    assert parse_args([]).cancel_on_disconnect is True
    assert parse_args(["--no-cancel-on-disconnect"]).cancel_on_disconnect is False


def test_wait_idle_returns_once_nothing_runs() -> None:
    # a slow stream (5 x 0.4 s): it must still be running when the short wait gives up, also on a loaded box
    with serve_app(fake_server(delay_s=0.4)) as url:
        assert wait_idle(url, timeout_s=5) < 1
        with concurrent_stream(url):
            with pytest.raises(ServiceError, match="still had 1 running"):
                wait_idle(url, timeout_s=0.2)
        assert wait_idle(url, timeout_s=5) < 5


@contextmanager
def concurrent_stream(url: str):
    """One stream running in the background while the block runs (started: its first chunk arrived)."""
    import openai

    api = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    stream = api.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    next(iter(stream))
    try:
        yield
    finally:
        list(stream)
        api.close()


# ---- the lab's cell-written server (common_utils.reference.fastapi_service) on a tiny random model ----------
@pytest.fixture(scope="module")
def tiny_chat_model():
    from common_utils.core.models import load_tokenizer

    from tiny_models import random_llama

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    model = random_llama(vocab_size=len(tokenizer), max_positions=256, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return model, tokenizer


def test_reference_servers_stream_what_they_answer_whole(tiny_chat_model) -> None:
    from common_utils.reference.fastapi_service import build_basic_app, build_streaming_app, greedy_chat

    import openai

    model, tokenizer = tiny_chat_model
    question = [{"role": "user", "content": "Say hello."}]
    expected = greedy_chat(model, tokenizer, question, 12)
    for app in (build_basic_app(model, tokenizer, "tiny"), build_streaming_app(model, tokenizer, "tiny")):
        with serve_app(app) as url:
            api = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=60)
            whole = api.chat.completions.create(model="tiny", messages=question, max_tokens=12)
            assert whole.choices[0].message.content == expected["text"]
            assert whole.usage.completion_tokens == expected["completion_tokens"] == 12  # random weights: no EOS
            assert whole.choices[0].finish_reason == "length"
            with pytest.raises(openai.NotFoundError):
                api.chat.completions.create(model="other", messages=question, max_tokens=2)
            api.close()
    with serve_app(build_streaming_app(model, tokenizer, "tiny")) as url:
        run = run_clients(f"{url}/v1", "k", "tiny", [question] * 2, concurrency=2, max_tokens=12)
    assert [r.text for r in run.results] == [expected["text"]] * 2
    assert [r.completion_tokens for r in run.results] == [12, 12]


def test_reference_streaming_server_stops_generating_for_a_client_that_left(tiny_chat_model) -> None:
    from common_utils.reference.fastapi_service import BackgroundGeneration, build_streaming_app

    import openai

    model, tokenizer = tiny_chat_model
    started: list[BackgroundGeneration] = []
    original_init = BackgroundGeneration.__init__

    def record(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        started.append(self)

    slow = model.register_forward_hook(lambda *_: time.sleep(0.01))
    BackgroundGeneration.__init__ = record
    try:
        with serve_app(build_streaming_app(model, tokenizer, "tiny")) as url:
            api = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=60)
            stream = api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=200, stream=True)
            for _ in zip(range(3), stream):
                pass
            stream.close()
            started[0].thread.join(timeout=30)
            api.close()
    finally:
        BackgroundGeneration.__init__ = original_init
        slow.remove()
    assert started[0].cancel.is_set() and not started[0].thread.is_alive()
    assert len(started[0].new_ids) < 100, "the generation should stop soon after the client hung up"


def test_reference_histogram_quantile_interpolates_like_promql() -> None:
    import math

    from common_utils.reference.fastapi_service import histogram_quantile

    buckets = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (math.inf, 40.0)]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)  # rank 10: the top of the first bucket
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (20 - 10) / 20)
    assert histogram_quantile(1.0, buckets) == pytest.approx(1.0)
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.02)  # rank 2 of 10 in [0, 0.1]: starts at 0
    assert histogram_quantile(0.99, [(0.1, 1.0), (math.inf, 10.0)]) == 0.1  # in +Inf: the highest finite bound
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))
