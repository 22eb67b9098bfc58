"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.7-Performance_Monitoring_and_Load_Testing/01-Load_Generator.ipynb
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.7-Performance_Monitoring_and_Load_Testing/02-Concurrency_Sweep.ipynb
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.7-Performance_Monitoring_and_Load_Testing/03-Monitoring.ipynb

Edit the notebook's `#@save loadgen` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.7-Performance_Monitoring_and_Load_Testing/01-Load_Generator.ipynb ----
import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of `values` by linear interpolation between the two nearest ranks
    (numpy's default method): rank = (n - 1) * q / 100 in the sorted list. NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must lie in [0, 100], got {q}")
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_percentiles(values: Sequence[float], name: str, qs: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """{f"{name}_p50_s": ..., f"{name}_p95_s": ..., f"{name}_p99_s": ...}: one row's worth of a latency."""
    return {f"{name}_p{q}_s": percentile(values, q) for q in qs}

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.7-Performance_Monitoring_and_Load_Testing/01-Load_Generator.ipynb ----
import asyncio
import time
from dataclasses import dataclass, field

LOOPBACK = "http://127.0.0.1:"


def check_loopback(v1_url: str) -> str:
    """A load generator only aims at this machine: `http://127.0.0.1:PORT/v1`, or ValueError."""
    if not v1_url.startswith(LOOPBACK):
        raise ValueError(f"the load generator talks to loopback servers only ({LOOPBACK}PORT/v1), got {v1_url!r}")
    return v1_url


@dataclass
class LoadRun:
    """One load run: each request's client-side timing (a `service_client.StreamTiming`), when it was sent
    (seconds after the start), and why sending stopped ("count": all `max_requests` sent; "time": the
    `time_limit_s` deadline came first)."""

    mode: str  # "closed" (N virtual users) or "open" (arrivals on a schedule)
    level: float  # users (closed) or planned arrivals per second (open)
    results: list
    sent_s: list[float]
    wall_s: float
    stopped_by: str
    planned_s: list[float] = field(default_factory=list)  # open loop: the scheduled arrival times

    @property
    def achieved_rate(self) -> float:
        """Requests sent per second: n / time of the last send (the first send comes one gap after the start,
        as in `trace.poisson_arrivals`, so a perfectly timed open loop gives n / its last planned arrival)."""
        return len(self.sent_s) / self.sent_s[-1] if self.sent_s and self.sent_s[-1] > 0 else float("nan")


async def closed_loop(send, client, model, conversations, users, max_tokens, max_requests, time_limit_s) -> LoadRun:
    """N virtual users; each sends its next request only when its previous one has finished (a closed system:
    a slow server slows the senders down, so the load adapts to the server)."""
    start = time.perf_counter()
    done: list[tuple[int, float, object]] = []
    next_index, stopped_by = 0, "count"

    async def user() -> None:
        nonlocal next_index, stopped_by
        while next_index < max_requests:
            if time.perf_counter() - start >= time_limit_s:
                stopped_by = "time"
                return
            index, next_index = next_index, next_index + 1
            sent = time.perf_counter() - start
            done.append((index, sent, await send(client, model, conversations[index % len(conversations)],
                                                 max_tokens)))

    await asyncio.gather(*(user() for _ in range(users)))
    done.sort(key=lambda item: item[0])
    return LoadRun("closed", users, [r for _, _, r in done], sorted(s for _, s, _ in done),
                   time.perf_counter() - start, stopped_by)


async def open_loop(send, client, model, conversations, arrivals_s, max_tokens, time_limit_s) -> LoadRun:
    """One request at each planned arrival time, whether or not earlier ones have finished (an open system:
    arrivals do not wait for the server, so a slow server builds a queue that TTFT shows)."""
    start = time.perf_counter()
    tasks, sent, stopped_by = [], [], "count"
    for index, arrival in enumerate(arrivals_s):
        if arrival >= time_limit_s:
            stopped_by = "time"
            break
        await asyncio.sleep(max(0.0, start + arrival - time.perf_counter()))
        sent.append(time.perf_counter() - start)
        tasks.append(asyncio.create_task(send(client, model, conversations[index % len(conversations)], max_tokens)))
    results = list(await asyncio.gather(*tasks))
    planned = list(arrivals_s[:len(sent)])
    level = len(planned) / planned[-1] if planned and planned[-1] > 0 else float("nan")
    return LoadRun("open", level, results, sent, time.perf_counter() - start, stopped_by, planned)


def run_load(v1_url: str, api_key: str, model: str, conversations, max_tokens: int, max_requests: int,
             time_limit_s: float, *, send, runner, users: int | None = None, arrivals_s=None,
             drain_s: float = 120.0) -> LoadRun:
    """Closed loop (`users=N`) or open loop (`arrivals_s`: seconds after the start, e.g.
    `trace.poisson_arrivals`) against a loopback OpenAI-compatible server.

    `send` times one streamed request (`service_client.timed_stream`); `runner` runs the coroutine from
    synchronous code with a time limit (`service_client.run_sync`). Bounded twice: at most `max_requests`
    requests and none sent after `time_limit_s`; requests in flight then get `drain_s` more."""
    check_loopback(v1_url)
    if (users is None) == (arrivals_s is None):
        raise ValueError("give exactly one of users (closed loop) or arrivals_s (open loop)")
    if max_requests < 1 or time_limit_s <= 0 or (users is not None and users < 1):
        raise ValueError(f"need max_requests >= 1, time_limit_s > 0 and users >= 1; got {max_requests}, "
                         f"{time_limit_s}, {users}")

    async def run() -> LoadRun:
        import httpx
        import openai

        pool = httpx.Limits(max_connections=max_requests, max_keepalive_connections=max_requests)
        async with openai.AsyncOpenAI(base_url=v1_url, api_key=api_key, max_retries=0,  # no silent retries
                                      timeout=time_limit_s + drain_s,
                                      http_client=openai.DefaultAsyncHttpxClient(limits=pool)) as client:
            if users is not None:
                return await closed_loop(send, client, model, conversations, users, max_tokens, max_requests,
                                         time_limit_s)
            return await open_loop(send, client, model, conversations, list(arrivals_s)[:max_requests],
                                   max_tokens, time_limit_s)

    return runner(run, time_limit_s + drain_s)

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.7-Performance_Monitoring_and_Load_Testing/01-Load_Generator.ipynb ----
from dataclasses import dataclass


@dataclass(frozen=True)
class SLO:
    """A service-level objective per request: first token within `ttft_s`, and the request's own 95th
    percentile inter-token gap within `itl_p95_s`."""

    ttft_s: float
    itl_p95_s: float


def meets_slo(timing, slo: SLO) -> bool:
    """A successful request whose TTFT and own ITL p95 are both within the SLO (a one-token answer has no
    gaps: only its TTFT counts)."""
    if timing.status != 200 or timing.ttft_s is None:
        return False
    return timing.ttft_s <= slo.ttft_s and (not timing.itl_s or percentile(timing.itl_s, 95) <= slo.itl_p95_s)


def summarize(run: LoadRun, slo: SLO) -> dict:
    """One table row: request counts, error rate, TTFT / ITL / end-to-end p50/p95/p99 over the successful
    requests (ITL over every gap of every request), throughput, and goodput: the share of ALL requests that
    succeeded within the SLO, and those requests per second (DistServe, 2024)."""
    ok = [r for r in run.results if r.status == 200]
    good = sum(meets_slo(r, slo) for r in run.results)
    n, wall = len(run.results), run.wall_s
    return {"mode": run.mode, "level": run.level, "requests": n, "errors": n - len(ok),
            "error_rate": (n - len(ok)) / n if n else float("nan"),
            **latency_percentiles([r.ttft_s for r in ok if r.ttft_s is not None], "ttft"),
            **latency_percentiles([g for r in ok for g in r.itl_s], "itl"),
            **latency_percentiles([r.total_s for r in ok], "e2e"),
            "e2e_mean_s": sum(r.total_s for r in ok) / len(ok) if ok else float("nan"),
            "tokens_per_s": sum(r.completion_tokens for r in ok) / wall if wall > 0 else 0.0,
            "requests_per_s": len(ok) / wall if wall > 0 else 0.0,
            "slo_attainment": good / n if n else float("nan"),
            "goodput_rps": good / wall if wall > 0 else 0.0,
            "wall_s": wall, "stopped_by": run.stopped_by}

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.7-Performance_Monitoring_and_Load_Testing/01-Load_Generator.ipynb ----
import asyncio  # noqa: F811 - each #@save cell imports what it uses
import json
import time  # noqa: F811


def canned_stream_app(pieces: int = 8, first_delay_s: float = 0.02, gap_s: float = 0.005,
                      one_at_a_time: bool = False):
    """A fake OpenAI-compatible chat server that streams `pieces` canned words with fixed delays: a fast,
    model-free target for testing a load generator. `one_at_a_time=True` serves one request at a time (an
    asyncio lock): a saturated single-worker server, where queueing shows up in TTFT."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    app = FastAPI(title="canned stream")
    lock = asyncio.Lock()

    def chunk(delta: dict, finish=None, usage=None) -> str:
        body = {"id": "canned", "object": "chat.completion.chunk", "created": int(time.time()), "model": "canned",
                "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(body | ({'usage': usage} if usage else {}))}\n\n"

    async def body():
        yield chunk({"role": "assistant", "content": ""})
        await asyncio.sleep(first_delay_s)
        for i in range(pieces):
            if i:
                await asyncio.sleep(gap_s)
            yield chunk({"content": f" w{i}"})
        yield chunk({}, finish="length")
        yield chunk({}, usage={"prompt_tokens": 5, "completion_tokens": pieces, "total_tokens": 5 + pieces})
        yield "data: [DONE]\n\n"

    async def serial():
        async with lock:  # the whole stream holds the lock: the next request waits for this one to finish
            async for event in body():
                yield event

    @app.post("/v1/chat/completions")
    async def chat():  # the request body is not read: every request gets the same canned answer
        return StreamingResponse(serial() if one_at_a_time else body(), media_type="text/event-stream")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    return app

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.7-Performance_Monitoring_and_Load_Testing/02-Concurrency_Sweep.ipynb ----
def histogram_totals(families: dict, name: str) -> tuple[float, float]:
    """(`_sum`, `_count`) of histogram `name` in parsed /metrics, summed over its labels."""
    total = {"sum": 0.0, "count": 0.0}
    for family in families.values():
        for s in family.samples:
            for part in total:
                if s.name == f"{name}_{part}":
                    total[part] += s.value
    return total["sum"], total["count"]


def concurrency_sweep(servers: dict, model: str, conversations, levels, max_tokens: int, requests_per_level: int,
                      time_limit_s: float, slo: SLO, *, send, runner, scrape=None, batch_histograms=None) -> list[dict]:
    """For each server (name -> a function returning a context manager that starts it and yields an object
    with `.v1`, `.base_url` and `.api_key`, e.g. `service_client.course_server`): one warm-up request, then a
    closed loop at each concurrency level with the same number of requests; one `summarize` row per (server,
    level). With `scrape` (`service_client.scrape_metrics`) and `batch_histograms` ({server: histogram of
    requests per model step}), each row also gets `mean_batch`: the rows the server computed per step in that
    level, read from its own counters (independent of how loaded the machine is)."""
    rows = []
    for name, start in servers.items():
        histogram = (batch_histograms or {}).get(name) if scrape else None
        with start() as server:
            run_load(server.v1, server.api_key, model, conversations[:1], max_tokens, 1, time_limit_s,
                     send=send, runner=runner, users=1)  # warm-up: first-request costs stay out of the table
            for users in levels:
                before = histogram_totals(scrape(server.base_url), histogram) if histogram else None
                run = run_load(server.v1, server.api_key, model, conversations, max_tokens, requests_per_level,
                               time_limit_s, send=send, runner=runner, users=users)
                row = {"server": name, **summarize(run, slo), "start_s": getattr(server, "start_s", float("nan"))}
                if histogram:
                    after = histogram_totals(scrape(server.base_url), histogram)
                    row["mean_batch"] = (after[0] - before[0]) / max(after[1] - before[1], 1)
                rows.append(row)
    return rows


def find_knee(rows: list[dict], latency: str = "e2e_p95_s") -> float | None:
    """The first concurrency level where latency grew by a larger factor than throughput did since the
    previous level: past it, more concurrency buys mostly waiting. None when no level does."""
    for before, after in zip(rows, rows[1:]):
        if after[latency] / before[latency] > after["tokens_per_s"] / before["tokens_per_s"]:
            return after["level"]
    return None

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.7-Performance_Monitoring_and_Load_Testing/03-Monitoring.ipynb ----
def summed_buckets(families: dict, name: str, **labels) -> list[tuple[float, float]]:
    """(le, cumulative count) of histogram `name` in parsed /metrics (`service_client.parse_metrics`), summed
    over every other label (vLLM labels each series with its model and engine), restricted to `labels`: the
    `sum by (le)` that goes inside PromQL's histogram_quantile."""
    sums: dict[float, float] = {}
    for family in families.values():
        for s in family.samples:
            if s.name == f"{name}_bucket" and all(s.labels.get(k) == v for k, v in labels.items()):
                sums[float(s.labels["le"])] = sums.get(float(s.labels["le"]), 0.0) + s.value
    return sorted(sums.items())


def bucket_delta(after, before) -> list[tuple[float, float]]:
    """Bucket counts added between two scrapes: what `increase(..._bucket[window])` feeds histogram_quantile,
    so requests served before the window (warm-up, earlier runs) do not count."""
    old = dict(before)
    return [(le, count - old.get(le, 0.0)) for le, count in after]

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.7-Performance_Monitoring_and_Load_Testing/03-Monitoring.ipynb ----
import threading
import time


class MetricsSampler:
    """Scrapes a server's /metrics in a background thread every `interval_s` while a `with` block runs:
    at most `max_samples` scrapes and none after `max_s` seconds (bounded like the load itself). `scrape`
    is `service_client.scrape_metrics`; `samples` holds (seconds since start, parsed families)."""

    def __init__(self, scrape, base_url: str, interval_s: float = 0.5, max_samples: int = 200, max_s: float = 120.0):
        check_loopback(f"{base_url}/v1")
        self.scrape, self.base_url, self.interval_s = scrape, base_url, interval_s
        self.max_samples, self.max_s = max_samples, max_s
        self.samples: list[tuple[float, dict]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)
        self._start = time.perf_counter()

    def _run(self) -> None:
        while len(self.samples) < self.max_samples and time.perf_counter() - self._start < self.max_s:
            try:
                self.samples.append((time.perf_counter() - self._start, self.scrape(self.base_url)))
            except Exception as error:  # noqa: BLE001 - a failed scrape is recorded, the load run goes on
                self.errors.append(repr(error))
            if self._stop.wait(self.interval_s):
                break
        if not self._stop.is_set():  # bounded: stopped by max_samples / max_s before the block ended
            self.errors.append("sampler stopped early: max_samples or max_s reached")

    def __enter__(self):
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 15)
        try:  # one last scrape after the load, so counters include the final requests
            self.samples.append((time.perf_counter() - self._start, self.scrape(self.base_url)))
        except Exception as error:  # noqa: BLE001
            self.errors.append(repr(error))

    def series(self, sample: str, **labels) -> list[tuple[float, float]]:
        """(t, value) of one sample name over the scrapes, summed over the other labels."""
        return [(t, sum(s.value for family in fams.values() for s in family.samples
                        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())))
                for t, fams in self.samples]
