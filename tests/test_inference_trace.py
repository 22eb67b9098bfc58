"""Request traces and latency statistics (common_utils.inference.trace), shared by Lab-2.3 and the serving labs."""

from __future__ import annotations

import statistics

from common_utils.inference.trace import (
    RequestTiming,
    TraceRequest,
    course_conversations,
    empirical_cdf,
    latency_summary,
    load_trace,
    make_trace,
    percentile,
    poisson_arrivals,
    save_trace,
    serving_summary,
)

import numpy as np
import pytest


def test_poisson_arrivals_are_seeded_increasing_and_at_the_asked_rate() -> None:
    times = poisson_arrivals(4000, rate_per_s=5.0, seed=3)
    assert times == poisson_arrivals(4000, rate_per_s=5.0, seed=3)
    assert times != poisson_arrivals(4000, rate_per_s=5.0, seed=4)
    gaps = np.diff([0.0, *times])
    assert (gaps > 0).all()
    assert abs(gaps.mean() - 0.2) < 0.02  # exponential gaps of mean 1/rate
    assert abs(gaps.std() - 0.2) < 0.02  # an exponential's std equals its mean


def test_poisson_arrivals_reject_bad_arguments() -> None:
    with pytest.raises(ValueError):
        poisson_arrivals(3, rate_per_s=0.0, seed=0)
    assert poisson_arrivals(0, rate_per_s=1.0, seed=0) == []


def test_course_conversations_mix_the_three_datasets() -> None:
    conversations = course_conversations(12, seed=0)
    assert len(conversations) == 12 and conversations == course_conversations(12, seed=0)
    kinds = {"extraction": 0, "system": 0, "topic": 0}
    for messages in conversations:
        assert messages[-1]["role"] == "user" and messages[-1]["content"].strip()
        if messages[0]["role"] == "system" and "JSON only" in messages[0]["content"]:
            kinds["extraction"] += 1
        elif messages[0]["role"] == "system":
            kinds["system"] += 1
        else:
            kinds["topic"] += 1
    assert kinds == {"extraction": 4, "system": 4, "topic": 4}
    with pytest.raises(ValueError):
        course_conversations(10**6, seed=0)


def test_make_trace_budgets_in_range_and_round_trip(tmp_path) -> None:
    conversations = [[{"role": "user", "content": f"question {i}"}] for i in range(30)]
    trace = make_trace(conversations, rate_per_s=2.0, new_tokens=(4, 9), seed=7)
    assert [r.request_id for r in trace] == list(range(30))
    assert all(4 <= r.max_new_tokens <= 9 for r in trace)
    assert len({r.max_new_tokens for r in trace}) > 1
    assert [r.messages for r in trace] == conversations
    assert trace == make_trace(conversations, rate_per_s=2.0, new_tokens=(4, 9), seed=7)
    assert load_trace(save_trace(trace, tmp_path / "trace.json")) == trace
    assert isinstance(trace[0], TraceRequest)
    with pytest.raises(ValueError):
        make_trace(conversations, rate_per_s=2.0, new_tokens=(5, 2), seed=0)


@pytest.mark.parametrize("q", [0, 10, 50, 95, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = [0.3, 1.7, 0.2, 5.0, 2.2, 2.2, 9.1]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_latency_summary_and_cdf() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    summary = latency_summary(values)
    assert summary["p50"] == 3.0 and summary["max"] == 10.0 and summary["n"] == 5
    assert summary["mean"] == statistics.mean(values) and summary["p95"] == pytest.approx(8.8)
    xs, ys = empirical_cdf([3.0, 1.0, 2.0])
    assert xs == [1.0, 2.0, 3.0] and ys == pytest.approx([1 / 3, 2 / 3, 1.0])
    with pytest.raises(ValueError):
        percentile([], 50)


def test_serving_summary_throughput_and_latencies() -> None:
    served = [RequestTiming(arrival_s=1.0, first_token_s=1.5, finish_s=3.0, output_tokens=10),
              RequestTiming(arrival_s=2.0, first_token_s=2.2, finish_s=5.0, output_tokens=30)]
    summary = serving_summary(served)
    assert summary["tokens"] == 40 and summary["seconds"] == 4.0 and summary["throughput_tok_s"] == 10.0
    assert summary["latency_s"]["max"] == 3.0 and summary["ttft_s"]["p50"] == pytest.approx(0.35)
    with pytest.raises(ValueError):
        serving_summary([])
