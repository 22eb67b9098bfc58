"""The course's OpenAI-compatible server (common_utils.inference.server), driven by the real `openai`
client over HTTP: a uvicorn server on a free loopback port, always stopped after the test.

Protocol tests serve a tiny random-weight Llama with the embedded tokenizer (fast); the tests marked
slow start the real command line (`python -m common_utils.inference.server`) on the embedded model and
check that its greedy answer equals in-process `generate`."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

for _module in ("fastapi", "uvicorn", "openai", "sse_starlette", "prometheus_client"):
    pytest.importorskip(_module, reason="the server needs the `serve` extra: pip install -e '.[serve]'")

from common_utils.core.models import load_tokenizer  # noqa: E402
from common_utils.core.processes import free_port  # noqa: E402
from common_utils.inference.server import Settings, create_app  # noqa: E402
from common_utils.inference.server_protocol import TextAssembler  # noqa: E402
from common_utils.inference.service_client import serve_app  # noqa: E402

import httpx  # noqa: E402
import openai  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

MODEL = "smollm2-135m-instruct"
KEY = "test-key-not-secret"
REPO_ROOT = Path(__file__).resolve().parents[1]
HELLO = [{"role": "user", "content": "Say hello."}]


# ---- helpers --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MODEL)


def tiny_model(tokenizer, step_delay_s: float = 0.0):
    """A fresh 2-layer random Llama over the embedded tokenizer's vocabulary (the engine switches a model
    to paged attention, so every server gets its own). `step_delay_s` makes each forward pass slower, to
    stand in for a real model in the timing tests."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    if step_delay_s:
        model.register_forward_hook(lambda *_: time.sleep(step_delay_s))
    return model


def settings(**changes) -> Settings:
    base = dict(api_key=KEY, model=MODEL, port=free_port(), max_batch=4, max_queue=32, max_model_len=256,
                max_tokens_limit=200, default_max_tokens=16, max_body_bytes=50_000, threads=None)
    return Settings(**{**base, **changes})


@contextmanager
def serving(app_settings: Settings, model, tokenizer):
    """Run the app with uvicorn in a thread on its port; yield the base URL; always stop it."""
    with serve_app(create_app(app_settings, model=model, tokenizer=tokenizer), port=app_settings.port) as url:
        yield url


_CLIENTS: list[openai.OpenAI] = []


def client(base: str, key: str = KEY, timeout: float = 60) -> openai.OpenAI:
    # max_retries=0: the client would otherwise retry 429s and 5xx quietly and hide what the server said
    api = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=timeout)
    _CLIENTS.append(api)
    return api


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


@pytest.fixture(scope="module")
def base_url(tokenizer):
    """One shared server for the protocol tests."""
    with serving(settings(), tiny_model(tokenizer), tokenizer) as url:
        yield url


# ---- protocol -------------------------------------------------------------------------------------
def test_models_health_and_api_key(base_url) -> None:
    models = client(base_url).models.list()
    assert [m.id for m in models.data] == [MODEL]
    with pytest.raises(openai.AuthenticationError) as caught:
        client(base_url, "wrong-key").models.list()
    assert caught.value.status_code == 401 and caught.value.body["code"] == "invalid_api_key"
    response = httpx.get(f"{base_url}/v1/models")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.post(f"{base_url}/v1/chat/completions", json={}).status_code == 401  # before the body
    health = httpx.get(f"{base_url}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_chat_streaming_and_not_give_the_same_greedy_text(base_url) -> None:
    api = client(base_url)
    whole = api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0)
    choice = whole.choices[0]
    assert whole.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length") and whole.usage.completion_tokens <= 12
    chunks = list(api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [choice.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_completions_streaming_and_not(base_url) -> None:
    api = client(base_url)
    whole = api.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert whole.object == "text_completion" and whole.usage.prompt_tokens > 0
    chunks = list(api.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8,
                                         temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_the_sse_wire_format_is_openais(base_url) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 5, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = [e for e in raw.split("\n\n") if e and not e.startswith(":")]  # ':' lines are keep-alive pings
    assert all(e.startswith("data: ") and "\n" not in e for e in events), raw
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e[len("data: "):]) for e in events[:-1]]
    assert {p["object"] for p in payloads} == {"chat.completion.chunk"}
    assert all(p["usage"] is None for p in payloads[:-1]) and payloads[-1]["usage"]["completion_tokens"] == 5
    assert payloads[-2]["choices"][0]["finish_reason"] == "length" and payloads[-2]["choices"][0]["delta"] == {}


def test_requests_are_validated_with_openai_shaped_errors(base_url) -> None:
    api, headers = client(base_url), {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    malformed = httpx.post(f"{base_url}/v1/chat/completions", content=b'{"model": ', headers=headers)
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"
    assert set(malformed.json()["error"]) >= {"message", "type", "code"}
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        api.chat.completions.create(model="gpt-4o", messages=HELLO)
    with pytest.raises(openai.BadRequestError, match="over this server's limit of 200"):
        api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=100_000)
    with pytest.raises(openai.BadRequestError, match="maximum context length is 256"):
        api.completions.create(model=MODEL, prompt="hello " * 300, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):  # prompt fits, budget does not
        api.completions.create(model=MODEL, prompt="hello " * 100, max_tokens=200)
    with pytest.raises(openai.BadRequestError, match="messages"):
        api.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.BadRequestError, match="n=2"):
        api.chat.completions.create(model=MODEL, messages=HELLO, n=2)
    with pytest.raises(openai.APIStatusError) as too_large:
        api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * 60_000}])
    assert too_large.value.status_code == 413 and too_large.value.body["code"] == "request_too_large"
    unknown = httpx.get(f"{base_url}/v2/nothing")
    assert unknown.status_code == 404 and "error" in unknown.json()


def test_sixteen_concurrent_requests_all_succeed_in_batches(base_url) -> None:
    api = client(base_url)

    def one(i: int) -> int:
        if i % 2:
            stream = api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"n{i}"}],
                                                 max_tokens=10, temperature=0, stream=True)
            return sum(1 for _ in stream)
        reply = api.completions.create(model=MODEL, prompt=f"Count to {i}:", max_tokens=10, temperature=0.7,
                                       seed=i)
        return reply.usage.completion_tokens

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))  # any exception here fails the test
    assert len(results) == 16 and all(r > 0 for r in results)
    metrics = httpx.get(f"{base_url}/metrics").text
    multi_steps = sum(float(line.split()[-1]) for line in metrics.splitlines()
                      if line.startswith("course_server_batch_size_bucket") and 'le="1.0"' in line)
    total_steps = float(next(line.split()[-1] for line in metrics.splitlines()
                             if line.startswith("course_server_batch_size_count")))
    assert total_steps > multi_steps, "no model step ever ran more than one request: nothing was batched"


def test_metrics_expose_every_series(base_url) -> None:
    client(base_url).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3, temperature=0)
    text = httpx.get(f"{base_url}/metrics").text
    assert 'course_server_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'course_server_requests_total{route="/v1/models",status="401"}' in text
    for series in ("course_server_time_to_first_token_seconds_bucket", "course_server_inter_token_latency_seconds_count",
                   "course_server_prompt_tokens_total", "course_server_completion_tokens_total",
                   "course_server_queue_depth", "course_server_in_flight_requests",
                   "course_server_request_duration_seconds_bucket"):
        assert series in text, series


def test_one_json_log_line_per_request_without_prompt_text(base_url, caplog) -> None:
    secret = "my card number is 4111"
    with caplog.at_level(logging.INFO, logger="common_utils.inference.server"):
        client(base_url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": secret}],
                                                 max_tokens=3, temperature=0)
        time.sleep(0.2)  # the line is written when the response has been sent
    lines = [r for r in caplog.records if r.getMessage() == "request" and r.fields["route"] == "/v1/chat/completions"]
    assert len(lines) == 1
    fields = lines[0].fields
    assert fields["status"] == 200 and fields["completion_tokens"] == 3 and fields["prompt_tokens"] > 0
    assert fields["id"].startswith("chatcmpl-") and fields["ttft_s"] > 0 and fields["duration_s"] > 0
    assert secret not in json.dumps(fields) and secret not in caplog.text


def test_stop_strings_and_multibyte_text_are_assembled_correctly(tokenizer) -> None:
    text = "你好, world! STOP here"
    ids = tokenizer(text)["input_ids"]
    assembler = TextAssembler(tokenizer, stop=["STOP"])
    pieces = [assembler.add(i) for i in ids]
    assert "".join(pieces) == "你好, world! " and assembler.stopped
    assert all("\ufffd" not in p for p in pieces)
    plain = TextAssembler(tokenizer)
    assert "".join(plain.add(i) for i in ids) + plain.flush() == text


# ---- back-pressure, cancellation and timeouts (a slowed model, one request per step) ----------------
def test_a_full_queue_answers_429_with_retry_after(tokenizer) -> None:
    with serving(settings(max_batch=1, max_queue=1), tiny_model(tokenizer, 0.02), tokenizer) as url:
        api = client(url)
        running = api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=150, stream=True)
        next(c for c in running if c.choices and c.choices[0].delta.content)  # a token: it is in the batch
        waiting = api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=150, stream=True)
        with pytest.raises(openai.RateLimitError) as caught:
            api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5)
        assert caught.value.response.headers["retry-after"] == "1"
        assert caught.value.body["code"] == "queue_full"
        running.close()
        waiting.close()


def test_sampling_rows_are_matched_to_their_requests(tokenizer) -> None:
    """Greedy requests batched with hot sampling ones (temperature 2: nearly uniform over the vocabulary)
    must still give their greedy text: if the engine matched a sampling request's knobs to another
    request's row of logits, a greedy request would get random tokens."""
    with serving(settings(max_batch=8), tiny_model(tokenizer, 0.005), tokenizer) as url:
        api = client(url)
        prompts = [f"Topic {i}: tell me something." for i in range(6)]
        greedy = [api.completions.create(model=MODEL, prompt=p, max_tokens=12, temperature=0).choices[0].text
                  for p in prompts]

        def one(i: int) -> str:
            time.sleep(0.02 * i)  # arrive one after another: new prompts join a batch that is decoding
            extra = {"temperature": 0} if i % 2 else {"temperature": 2.0}
            return api.completions.create(model=MODEL, prompt=prompts[i], max_tokens=12, **extra).choices[0].text

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            mixed = list(pool.map(one, range(6)))
        assert mixed[1::2] == greedy[1::2] and mixed[0::2] != greedy[0::2]
        seeded = [api.completions.create(model=MODEL, prompt=prompts[0], max_tokens=10, temperature=1.0,
                                         seed=7).choices[0].text for _ in range(2)]
        assert seeded[0] == seeded[1]


def _next_request_after_a_disconnect(tokenizer, cancel: bool) -> dict[str, float]:
    """Open a long stream, read 3 chunks, hang up; then time a short request on a one-slot server."""
    app_settings = settings(max_batch=1, cancel_on_disconnect=cancel)
    with serving(app_settings, tiny_model(tokenizer, 0.01), tokenizer) as url:
        api = client(url)
        stream = api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=200, temperature=0,
                                             stream=True)
        for _, _ in zip(range(3), stream):
            pass
        stream.close()  # the client disconnects mid-stream
        start = time.perf_counter()
        api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5, temperature=0)
        next_s = time.perf_counter() - start
        metrics = httpx.get(f"{url}/metrics").text
    generated = float(next(line.split()[-1] for line in metrics.splitlines()
                           if line.startswith("course_server_completion_tokens_total")))
    return {"next_request_s": next_s, "tokens_generated": generated}


def test_a_disconnected_stream_stops_generating_and_does_not_slow_the_next_request(tokenizer) -> None:
    with_cancel = _next_request_after_a_disconnect(tokenizer, cancel=True)
    without = _next_request_after_a_disconnect(tokenizer, cancel=False)  # the ablation: proves the check can fail
    print(f"next request after a disconnect: {with_cancel['next_request_s']:.2f} s with cancel "
          f"({with_cancel['tokens_generated']:.0f} tokens generated), {without['next_request_s']:.2f} s without "
          f"({without['tokens_generated']:.0f} tokens)")
    assert with_cancel["tokens_generated"] < 50 and without["tokens_generated"] > 150
    assert with_cancel["next_request_s"] < 1.0 < without["next_request_s"]
    assert with_cancel["next_request_s"] * 3 < without["next_request_s"]


def test_a_non_streaming_client_that_hangs_up_is_cancelled_too(tokenizer) -> None:
    with serving(settings(max_batch=1), tiny_model(tokenizer, 0.02), tokenizer) as url:
        impatient = client(url, timeout=0.5)
        with pytest.raises(openai.APITimeoutError):
            impatient.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=150, temperature=0)
        time.sleep(0.3)
        assert httpx.get(f"{url}/health").json()["running"] == 0
        metrics = httpx.get(f"{url}/metrics").text
    assert 'course_server_requests_total{route="/v1/chat/completions",status="499"} 1.0' in metrics
    generated = float(next(line.split()[-1] for line in metrics.splitlines()
                           if line.startswith("course_server_completion_tokens_total")))
    assert generated < 60  # ~25 steps fit in the 0.5 s timeout; all 150 would mean nobody cancelled


def test_requests_past_the_timeout_end_with_504_or_an_in_stream_error(tokenizer) -> None:
    with serving(settings(request_timeout_s=0.3), tiny_model(tokenizer, 0.02), tokenizer) as url:
        api = client(url)
        with pytest.raises(openai.APIStatusError) as caught:
            api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=150)
        assert caught.value.status_code == 504 and caught.value.body["code"] == "request_timeout"
        with pytest.raises(openai.APIError, match="timeout"):
            list(api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=150, stream=True))
        time.sleep(0.2)
        assert httpx.get(f"{url}/health").json()["running"] == 0  # both were cancelled in the engine


# ---- the real command line on the embedded model --------------------------------------------------
@pytest.mark.slow
def test_make_serve_command_answers_like_in_process_generate(tiny_lm) -> None:
    """`python -m common_utils.inference.server` (what `make serve` runs) on the embedded model: its greedy
    chat answer through the openai client equals `generate_batch` in this process."""
    from common_utils.core.generation import generate_batch

    model, tokenizer = tiny_lm
    question = [{"role": "user", "content": "What is the capital of France?"}]
    expected = generate_batch(model, tokenizer, [question], max_new_tokens=16, show_progress=False)[0]
    port = free_port()
    env = {**os.environ, "COURSE_API_KEY": KEY, "PORT": str(port), "COURSE_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": ""}  # fp32 on the CPU, like tiny_lm: compare like with like
    server = subprocess.Popen([sys.executable, "-m", "common_utils.inference.server"], cwd=REPO_ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, f"the server exited:\n{server.stdout.read()}"
            assert time.monotonic() < deadline, "the server did not become healthy in 90 s"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.25)
        api = client(f"http://127.0.0.1:{port}")
        reply = api.chat.completions.create(model=MODEL, messages=question, max_tokens=16, temperature=0)
        streamed = "".join(c.choices[0].delta.content or "" for c in api.chat.completions.create(
            model=MODEL, messages=question, max_tokens=16, temperature=0, stream=True))
    finally:
        server.terminate()
        try:
            output, _ = server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate()
    assert reply.choices[0].message.content.strip() == expected and "Paris" in expected
    assert streamed.strip() == expected
    log_lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    requests = [line for line in log_lines if line.get("event") == "request" and line["route"] == "/v1/chat/completions"]
    assert len(requests) == 2 and all("capital" not in json.dumps(line) for line in log_lines)


@pytest.mark.slow
def test_a_lora_adapter_is_merged_into_the_served_model(tmp_path) -> None:
    """--adapter PATH: the served model computes what the PeftModel (base + adapter) computes."""
    from common_utils.core.models import load_causal_lm
    from common_utils.inference.server import load_model

    from peft import LoraConfig, PeftModel, get_peft_model

    base, tokenizer = load_causal_lm(MODEL, device="cpu")
    torch.manual_seed(0)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    served, _ = load_model(Settings(api_key=KEY, model=MODEL, adapter=str(tmp_path / "adapter")))
    reference = PeftModel.from_pretrained(load_causal_lm(MODEL, device="cpu")[0], tmp_path / "adapter").eval()
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        merged, adapted = (m(ids.to(m.device)).logits.cpu() for m in (served, reference))
        with reference.disable_adapter():
            base_logits = reference(ids.to(reference.device)).logits.cpu()
    assert not isinstance(served, PeftModel)
    assert torch.allclose(merged, adapted, atol=1e-3) and not torch.allclose(merged, base_logits, atol=1e-2)
