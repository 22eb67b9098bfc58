"""The load generator Lab-2.7 teaches (common_utils/reference/loadgen.py, exported from its notebooks),
against the model-free canned stream server it ships (`canned_stream_app`), served with `serve_app`."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

for _module in ("fastapi", "uvicorn", "openai", "prometheus_client"):
    pytest.importorskip(_module, reason="the load generator needs the `serve` extra: pip install -e '.[serve]'")

from common_utils.inference.service_client import parse_metrics, run_sync, serve_app, timed_stream  # noqa: E402
from common_utils.inference.trace import poisson_arrivals  # noqa: E402
from common_utils.reference.fastapi_service import histogram_quantile  # noqa: E402
from common_utils.reference.loadgen import (  # noqa: E402
    SLO,
    LoadRun,
    MetricsSampler,
    bucket_delta,
    canned_stream_app,
    check_loopback,
    concurrency_sweep,
    find_knee,
    meets_slo,
    percentile,
    run_load,
    summarize,
    summed_buckets,
)

CONV = [[{"role": "user", "content": "hi"}]]
LOOSE = SLO(ttft_s=5.0, itl_p95_s=5.0)


def load(url: str, **kwargs) -> LoadRun:
    args = dict(max_tokens=8, max_requests=10, time_limit_s=20.0) | kwargs
    return run_load(f"{url}/v1", "unused", "canned", CONV, send=timed_stream, runner=run_sync, **args)


@pytest.fixture(scope="module")
def fast_url():
    with serve_app(canned_stream_app(pieces=6, first_delay_s=0.01, gap_s=0.002)) as url:
        yield url


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101])
def test_percentile_equals_numpy(n: int) -> None:
    values = list(np.random.default_rng(n).lognormal(size=n))
    for q in (0, 1, 25, 50, 90, 95, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-12)
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_refuses_non_loopback_and_bad_arguments() -> None:
    for url in ("http://example.com/v1", "https://127.0.0.1:8000/v1", "http://0.0.0.0:8000/v1"):
        with pytest.raises(ValueError, match="loopback"):
            run_load(url, "k", "m", CONV, 8, 1, 1.0, send=timed_stream, runner=run_sync, users=1)
    assert check_loopback("http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="exactly one"):
        run_load("http://127.0.0.1:9/v1", "k", "m", CONV, 8, 1, 1.0, send=timed_stream, runner=run_sync)
    with pytest.raises(ValueError, match="max_requests"):
        run_load("http://127.0.0.1:9/v1", "k", "m", CONV, 8, 0, 1.0, send=timed_stream, runner=run_sync, users=1)


def test_closed_loop_counts_and_summary(fast_url: str) -> None:
    run = load(fast_url, users=3, max_requests=9)
    row = summarize(run, LOOSE)
    assert run.stopped_by == "count" and row["requests"] == 9 and row["errors"] == 0
    assert all(r.completion_tokens == 6 and len(r.itl_s) == 5 for r in run.results)
    assert row["tokens_per_s"] == pytest.approx(9 * 6 / run.wall_s)
    assert row["ttft_p50_s"] <= row["ttft_p95_s"] <= row["ttft_p99_s"] <= row["e2e_p99_s"]
    assert row["slo_attainment"] == 1.0 and row["goodput_rps"] == pytest.approx(row["requests_per_s"])


def test_closed_loop_stops_at_the_time_limit(fast_url: str) -> None:
    start = time.perf_counter()
    run = load(fast_url, users=2, max_requests=100_000, time_limit_s=0.5)
    assert run.stopped_by == "time" and 0 < len(run.results) < 100_000
    assert time.perf_counter() - start < 5


def test_open_loop_follows_the_schedule(fast_url: str) -> None:
    n, rate = 60, 60.0
    arrivals = poisson_arrivals(n, rate, seed=3)
    run = load(fast_url, arrivals_s=arrivals, max_requests=n)
    assert run.mode == "open" and len(run.results) == n and run.stopped_by == "count"
    assert run.level == pytest.approx(n / arrivals[-1])
    assert abs(run.achieved_rate / run.level - 1) < 0.15
    assert all(sent >= planned - 1e-3 for sent, planned in zip(run.sent_s, run.planned_s))
    late = load(fast_url, arrivals_s=arrivals, max_requests=n, time_limit_s=arrivals[n // 2])
    assert late.stopped_by == "time" and len(late.results) == n // 2


def test_open_loop_shows_queueing_that_closed_loop_hides() -> None:
    """Coordinated omission: a serial server, the same requests; only the open loop sees the queue."""
    with serve_app(canned_stream_app(pieces=2, first_delay_s=0.05, gap_s=0.001, one_at_a_time=True)) as url:
        closed = summarize(load(url, users=1, max_requests=12), LOOSE)
        open_ = summarize(load(url, arrivals_s=poisson_arrivals(12, 60.0, seed=1), max_requests=12), LOOSE)
    assert open_["ttft_p95_s"] > 3 * closed["ttft_p95_s"], (open_["ttft_p95_s"], closed["ttft_p95_s"])


def test_impossible_slo_gives_zero_goodput(fast_url: str) -> None:
    run = load(fast_url, users=2, max_requests=4)
    impossible = summarize(run, SLO(ttft_s=1e-9, itl_p95_s=1e-9))
    assert impossible["slo_attainment"] == 0 and impossible["goodput_rps"] == 0
    assert not any(meets_slo(r, SLO(ttft_s=1e-9, itl_p95_s=10)) for r in run.results)
    assert all(meets_slo(r, LOOSE) for r in run.results)


def test_errors_count_against_goodput() -> None:
    from common_utils.inference.service_client import StreamTiming

    run = LoadRun("closed", 1, [StreamTiming(ttft_s=0.1, itl_s=[0.01]), StreamTiming(status=500)], [0.0, 0.1], 1.0,
                  "count")
    row = summarize(run, LOOSE)
    assert row["errors"] == 1 and row["error_rate"] == 0.5 and row["slo_attainment"] == 0.5


def test_find_knee() -> None:
    rows = [{"level": 1, "e2e_p95_s": 1.0, "tokens_per_s": 10}, {"level": 2, "e2e_p95_s": 1.1, "tokens_per_s": 19},
            {"level": 4, "e2e_p95_s": 2.0, "tokens_per_s": 25}]
    assert find_knee(rows) == 4
    assert find_knee(rows[:2]) is None


def test_histogram_helpers_and_sampler() -> None:
    text = """# TYPE x histogram
x_bucket{le="1.0",m="a"} 2
x_bucket{le="2.0",m="a"} 4
x_bucket{le="+Inf",m="a"} 4
x_bucket{le="1.0",m="b"} 0
x_bucket{le="2.0",m="b"} 4
x_bucket{le="+Inf",m="b"} 4
x_count{m="a"} 4
x_sum{m="a"} 5
"""
    families = parse_metrics(text)
    assert summed_buckets(families, "x") == [(1.0, 2.0), (2.0, 8.0), (math.inf, 8.0)]
    assert summed_buckets(families, "x", m="a") == [(1.0, 2.0), (2.0, 4.0), (math.inf, 4.0)]
    assert bucket_delta(summed_buckets(families, "x"), summed_buckets(families, "x", m="a")) == [
        (1.0, 0.0), (2.0, 4.0), (math.inf, 4.0)]
    assert histogram_quantile(0.5, summed_buckets(families, "x")) == pytest.approx(1.0 + 1.0 * (4 - 2) / 6)
    calls = []

    def scrape(url: str) -> dict:
        calls.append(url)
        return families

    with MetricsSampler(scrape, "http://127.0.0.1:9", interval_s=0.01, max_samples=3, max_s=5) as sampler:
        time.sleep(0.2)
    assert len(sampler.samples) == 4  # three in the loop (bounded) + the final one
    assert sampler.series("x_count", m="a")[0][1] == 4
    assert any("stopped early" in e for e in sampler.errors)


def test_concurrency_sweep_rows_per_server_and_level() -> None:
    from contextlib import contextmanager
    from types import SimpleNamespace

    @contextmanager
    def fake_server():
        with serve_app(canned_stream_app(pieces=3, first_delay_s=0.005, gap_s=0.001)) as url:
            yield SimpleNamespace(v1=f"{url}/v1", base_url=url, api_key="unused")

    scraped = []

    def scrape(url: str) -> dict:
        scraped.append(url)
        n = len(scraped)
        return parse_metrics(f'# TYPE steps histogram\nsteps_bucket{{le="+Inf"}} {n}\nsteps_count {n}\nsteps_sum {2 * n}\n')

    rows = concurrency_sweep({"a": fake_server, "b": fake_server}, "canned", CONV, [1, 2], 3, 4, 20.0, LOOSE,
                             send=timed_stream, runner=run_sync, scrape=scrape, batch_histograms={"a": "steps"})
    assert [(r["server"], r["level"], r["requests"], r["errors"]) for r in rows] == [
        ("a", 1, 4, 0), ("a", 2, 4, 0), ("b", 1, 4, 0), ("b", 2, 4, 0)]
    assert rows[0]["mean_batch"] == 2.0 and "mean_batch" not in rows[2]  # (sum 2n+2 - 2n) / (count n+1 - n)
    assert len(scraped) == 4  # before and after each level of server "a" only
