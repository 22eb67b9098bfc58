"""Running and measuring an OpenAI-compatible service from a notebook or a test (Lab-2.4; Lab-2.5/2.7 reuse it).

    serve_app(app)           a FastAPI app on a free loopback port in a background thread (uvicorn), stopped after
    managed_server(cmd, ...) any HTTP server command as a subprocess, waited for on its health route, always
                             stopped, its output in a log file (vLLM and PyTriton start through it: engines.py)
    course_server(...)       the course server (`python -m common_utils.inference.server`) through managed_server
    wait_idle(url)           wait until the course server runs and queues nothing (its counters are final)
    run_clients(...)         N requests through `openai.AsyncOpenAI`, at most `concurrency` at a time, each timed
                             from the client side (TTFT, inter-token gaps, end to end), errors kept with their status
    scrape_metrics(url)      GET /metrics parsed by prometheus_client's own text parser

Nothing here teaches serving: the servers a lab teaches are written in its notebooks (`#@save fastapi_service`)
and in common_utils/inference/server*.py. This is the harness around them: loopback only, every wait bounded
in time, every server stopped in a `finally`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common_utils.core.processes import free_port, stop_group, stop_process, tail

HOST = "127.0.0.1"  # loopback only: nothing here listens on or connects to another address
SERVER_MODULE = "common_utils.inference.server"
TOPICS = ("a lighthouse keeper", "a robot learning to cook", "a cat on a train", "the first rain on Mars",
          "a lost umbrella", "a library at midnight", "a tiny dragon", "an old clock tower")


class ServiceError(RuntimeError):
    """A server did not start, or exited; the message carries its log tail and what to try."""


# ---- servers ------------------------------------------------------------------------------------------
@contextmanager
def serve_app(app: Any, port: int | None = None, start_timeout_s: float = 30.0,
              stop_timeout_s: float = 15.0) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a daemon thread on 127.0.0.1:`port` (default: a free one) and yield its
    base URL (`http://127.0.0.1:PORT`). The server is always stopped on exit, also when the block raises.

    A thread, not a process: the app shares the notebook's model object, so nothing is loaded twice. The app's
    lifespan (startup/shutdown) runs as under `uvicorn app:app`."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            if not thread.is_alive():
                raise ServiceError(f"uvicorn exited before it started on port {port} (is the port taken?)")
            if time.monotonic() > deadline:
                raise ServiceError(f"uvicorn did not start within {start_timeout_s:.0f} s on port {port}")
            time.sleep(0.02)
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=stop_timeout_s)


@dataclass
class ServerProcess:
    """A course server started by `course_server`: where it listens, its key, its log."""

    base_url: str
    api_key: str
    log_path: Path
    process: subprocess.Popen
    start_s: float  # seconds from launch to a healthy /health

    @property
    def v1(self) -> str:
        """The base URL an OpenAI client takes (`.../v1`)."""
        return f"{self.base_url}/v1"

    def log_tail(self, lines: int = 20) -> str:
        return tail(self.log_path, lines)


def wait_healthy(base_url: str, timeout_s: float, alive: Callable[[], bool] = lambda: True,
                 poll_s: float = 0.25, health_path: str = "/health") -> float:
    """Poll GET `health_path` until it answers 200; returns the seconds waited. Raises ServiceError when
    `alive()` turns false (the process exited) or after `timeout_s`."""
    import httpx

    start = time.monotonic()
    while True:
        if not alive():
            raise ServiceError(f"the server at {base_url} exited before it became healthy")
        try:
            if httpx.get(f"{base_url}{health_path}", timeout=2.0).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        if time.monotonic() - start > timeout_s:
            raise ServiceError(f"{base_url}{health_path} did not answer 200 within {timeout_s:.0f} s")
        time.sleep(poll_s)


def wait_idle(base_url: str, timeout_s: float = 60.0, poll_s: float = 0.1) -> float:
    """Poll the course server's /health until no request is running or waiting (its engine is idle); returns
    the seconds waited. Counters such as completion tokens are final only then: a request is counted when
    it leaves the batch."""
    import httpx

    start = time.monotonic()
    while True:
        health = httpx.get(f"{base_url}/health", timeout=5.0).json()
        if health.get("running", 0) == 0 and health.get("waiting", 0) == 0:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise ServiceError(f"{base_url} still had {health.get('running')} running and "
                               f"{health.get('waiting')} waiting requests after {timeout_s:.0f} s")
        time.sleep(poll_s)


def server_command(port: int, args: Sequence[str] = (), threads: int = 1) -> list[str]:
    """`python -m common_utils.inference.server --port PORT --threads N ...` with this interpreter."""
    return [sys.executable, "-m", SERVER_MODULE, "--port", str(port), "--threads", str(threads), *map(str, args)]


@contextmanager
def managed_server(command: Sequence[str], port: int, log_path: str | Path, api_key: str = "",
                   start_timeout_s: float = 180.0, env: dict[str, str] | None = None,
                   health_path: str = "/health", fix: str = "read the log above") -> Iterator[ServerProcess]:
    """Start any HTTP server `command` (listening on 127.0.0.1:`port`) as a subprocess, wait until
    `health_path` answers 200, yield a `ServerProcess`, and always stop it (SIGTERM, then SIGKILL after 15 s).

    Its stdout/stderr go to `log_path`; a failed or slow start raises ServiceError with the log's tail and
    `fix`. The course server, vLLM (Lab-2.5) and PyTriton (Lab-2.6) all start through here."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(list(map(str, command)), stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                   start_new_session=True)
    try:
        try:
            wait_healthy(f"http://{HOST}:{port}", start_timeout_s, alive=lambda: process.poll() is None,
                         health_path=health_path)
        except ServiceError as error:
            raise ServiceError(f"{error}\n--- last lines of {log_path} ---\n{tail(log_path)}\nFix: {fix}") from None
        yield ServerProcess(f"http://{HOST}:{port}", api_key, log_path, process, time.monotonic() - started)
    finally:
        stop_process(process)
        stop_group(process.pid)  # children the server left behind (PyTriton's tritonserver, vLLM's engine core)


@contextmanager
def course_server(args: Sequence[str] = (), api_key: str = "lab-key-not-secret", port: int | None = None,
                  log_path: str | Path = "outputs/logs/course_server.log", threads: int = 1,
                  start_timeout_s: float = 180.0, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """The course server (`python -m common_utils.inference.server`) on a free loopback port, through
    `managed_server`: waited for on /health, always stopped.

    `args` are extra command-line flags (`--max-batch 4`, `--max-queue 2` ...); torch threads are pinned
    with `--threads` (default 1: on a loaded 2-core machine 2 threads ran 4x slower than 1). The server's
    output (one JSON line per request) goes to `log_path`."""
    port = port or free_port()
    with managed_server(server_command(port, args, threads), port, log_path, api_key, start_timeout_s,
                        env={"COURSE_API_KEY": api_key, **(env or {})},
                        fix="read the log above; `make provision` provisions the model, and HF_HUB_OFFLINE=1 "
                            "stops any download attempt.") as server:
        yield server


# ---- clients ------------------------------------------------------------------------------------------
def demo_conversations(n: int, words: int = 60) -> list[list[dict[str, str]]]:
    """`n` chat requests that ask for a long answer (so every request uses its whole max_tokens budget and
    runs take comparable work); topics cycle through a fixed list."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [[{"role": "user", "content": f"Write a {words}-word story about {TOPICS[i % len(TOPICS)]}."}]
            for i in range(n)]


@dataclass
class StreamTiming:
    """One streamed request as the client saw it. `status` is 200, or the HTTP status of an error
    (`error` holds its message; `retry_after` the Retry-After header of a 429)."""

    status: int = 200
    ttft_s: float | None = None  # request sent -> first chunk with text
    itl_s: list[float] = field(default_factory=list)  # gaps between consecutive text chunks
    total_s: float = 0.0
    text: str = ""
    completion_tokens: int = 0  # from the usage chunk
    finish_reason: str | None = None
    error: str | None = None
    retry_after: str | None = None


async def timed_stream(client: Any, model: str, messages: list[dict[str, str]], max_tokens: int,
                       **kwargs: Any) -> StreamTiming:
    """Send one streaming chat request with `openai.AsyncOpenAI` and time it chunk by chunk. An HTTP error
    (401, 429, ...) is returned in the result, not raised, so one refused request does not hide the others."""
    import openai

    result = StreamTiming()
    start = last = time.perf_counter()
    try:
        stream = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                      stream=True, stream_options={"include_usage": True},
                                                      temperature=kwargs.pop("temperature", 0), **kwargs)
        async for chunk in stream:
            now = time.perf_counter()
            if chunk.usage is not None:
                result.completion_tokens = chunk.usage.completion_tokens
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            if choice.delta.content:
                if result.ttft_s is None:
                    result.ttft_s = now - start
                else:
                    result.itl_s.append(now - last)
                last = now
                result.text += choice.delta.content
            if choice.finish_reason:
                result.finish_reason = choice.finish_reason
    except openai.APIStatusError as error:
        result.status, result.error = error.status_code, str(error)
        result.retry_after = error.response.headers.get("retry-after")
    result.total_s = time.perf_counter() - start
    return result


@dataclass
class ConcurrencyRun:
    """Every request of one `run_clients` call and the wall time of the whole run."""

    concurrency: int
    results: list[StreamTiming]
    wall_s: float

    @property
    def ok(self) -> list[StreamTiming]:
        return [r for r in self.results if r.status == 200]

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.results]

    @property
    def tokens(self) -> int:
        return sum(r.completion_tokens for r in self.ok)

    @property
    def throughput(self) -> float:
        """Generated tokens per wall second over the whole run (all clients together)."""
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, float]:
        """Medians (and the worst TTFT) over the successful requests, plus throughput: one row of a table."""
        ok = self.ok
        ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
        gaps = [g for r in ok for g in r.itl_s]
        return {"concurrency": self.concurrency, "requests": len(self.results), "ok": len(ok),
                "ttft_median_s": statistics.median(ttfts) if ttfts else float("nan"),
                "ttft_max_s": max(ttfts) if ttfts else float("nan"),
                "itl_median_s": statistics.median(gaps) if gaps else float("nan"),
                "e2e_median_s": statistics.median(r.total_s for r in ok) if ok else float("nan"),
                "tokens": self.tokens, "wall_s": self.wall_s, "tokens_per_s": self.throughput}


def run_sync(make_coroutine: Callable[[], Any], timeout_s: float) -> Any:
    """Run a coroutine to completion from synchronous code, bounded by `timeout_s`. Inside Jupyter an event
    loop is already running in this thread, so the coroutine runs in a fresh loop on a worker thread."""

    async def bounded() -> Any:
        return await asyncio.wait_for(make_coroutine(), timeout=timeout_s)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(bounded())
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            box["value"] = asyncio.run(bounded())
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread below
            box["error"] = error

    thread = threading.Thread(target=worker, name="run-sync", daemon=True)
    thread.start()
    thread.join(timeout_s + 5)
    if "error" in box:
        raise box["error"]
    if "value" not in box:
        raise TimeoutError(f"the requests did not finish within {timeout_s:.0f} s")
    return box["value"]


def run_clients(v1_url: str, api_key: str, model: str, conversations: Sequence[list[dict[str, str]]],
                concurrency: int, max_tokens: int, timeout_s: float = 300.0, **kwargs: Any) -> ConcurrencyRun:
    """Send every conversation once as a streaming request through `openai.AsyncOpenAI`, at most
    `concurrency` in flight at a time (an asyncio semaphore), and time each from the client side.

    `max_retries=0`: the openai client would otherwise retry 429s and 5xx quietly and hide what the server
    said. The whole run is bounded by `timeout_s`."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if not v1_url.startswith(f"http://{HOST}:"):
        raise ValueError(f"run_clients talks to loopback servers only (http://{HOST}:PORT/v1), got {v1_url!r}")

    async def run() -> ConcurrencyRun:
        import openai

        gate = asyncio.Semaphore(concurrency)
        async with openai.AsyncOpenAI(base_url=v1_url, api_key=api_key, max_retries=0, timeout=timeout_s) as client:

            async def one(messages: list[dict[str, str]]) -> StreamTiming:
                async with gate:
                    return await timed_stream(client, model, messages, max_tokens, **dict(kwargs))

            start = time.perf_counter()
            results = await asyncio.gather(*(one(m) for m in conversations))
            return ConcurrencyRun(concurrency, list(results), time.perf_counter() - start)

    return run_sync(run, timeout_s)


# ---- metrics ------------------------------------------------------------------------------------------
def parse_metrics(text: str) -> dict[str, Any]:
    """Prometheus text format -> {family name: prometheus_client Metric} (its `.samples` hold name, labels,
    value). Counter families are named without `_total`, as prometheus_client's parser does."""
    from prometheus_client.parser import text_string_to_metric_families

    return {family.name: family for family in text_string_to_metric_families(text)}


def scrape_metrics(base_url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """GET `base_url`/metrics and parse it (see `parse_metrics`)."""
    import httpx

    response = httpx.get(f"{base_url}/metrics", timeout=timeout_s)
    response.raise_for_status()
    return parse_metrics(response.text)


def sample_value(families: dict[str, Any], sample: str, **labels: str) -> float:
    """The value of one sample (e.g. `course_server_completion_tokens_total`, or a histogram's `..._count`)
    whose labels include `labels`; 0.0 when the series has no such sample yet."""
    return sum(s.value for family in families.values() for s in family.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))
