"""Request traces for serving experiments, and the latency statistics every serving lab reports.

A *trace* is a fixed list of requests, each with an arrival time, a chat conversation and an output
budget. Lab-2.3 replays one through its own continuous-batching engine; the serving labs (vLLM,
FastAPI, load testing) replay the same saved file against real servers, so their numbers are
comparable: same prompts, same budgets, same arrival pattern.

Arrivals are a bounded Poisson process (exponential gaps, a fixed number of requests, a seed): the
standard model of independent users, and bounded so a CPU run ends in seconds.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

Messages = list[dict[str, str]]

TOPIC_QUESTION = "Which topic is this news sentence about: sports, technology, food or travel? Answer with one word."


@dataclass(frozen=True)
class TraceRequest:
    """One request of a trace: when it arrives (seconds after the trace starts), the chat it sends and
    how many new tokens it may generate at most (the server's `max_tokens`)."""

    request_id: int
    arrival_s: float
    messages: Messages
    max_new_tokens: int


def poisson_arrivals(n: int, rate_per_s: float, seed: int) -> list[float]:
    """`n` arrival times of a Poisson process with `rate_per_s` requests per second (exponential gaps
    of mean 1/rate), starting after the first gap. Seeded: the same arguments give the same times."""
    if n < 0 or rate_per_s <= 0:
        raise ValueError(f"need n >= 0 and rate_per_s > 0, got n={n}, rate_per_s={rate_per_s}")
    rng = random.Random(seed)
    times, now = [], 0.0
    for _ in range(n):
        now += rng.expovariate(rate_per_s)
        times.append(now)
    return times


def course_conversations(n: int, seed: int, split: str = "test") -> list[Messages]:
    """`n` chat conversations drawn from three course datasets in turn (JSON extraction, short
    format-following answers, one-word topic labels), shuffled with `seed`: prompts and natural answer
    lengths differ, which is what makes batching policies and KV memory behave differently."""
    from common_utils.data import dataset_schemas, datasets_dir, validate_jsonl
    from common_utils.tasks.extraction import extraction_messages

    schemas = dataset_schemas()

    def rows(name: str) -> list[dict[str, Any]]:
        return validate_jsonl(datasets_dir() / name / f"{split}.jsonl", schemas[name])

    pools = [
        [extraction_messages(row) for row in rows("person_extraction")],
        [[{"role": "system", "content": row["system"]}, {"role": "user", "content": row["prompt"]}]
         for row in rows("preference_format")],
        [[{"role": "user", "content": f"{TOPIC_QUESTION}\n\n{row['text']}"}] for row in rows("topic_classification")],
    ]
    rng = random.Random(seed)
    for pool in pools:
        rng.shuffle(pool)
    if n > sum(len(pool) for pool in pools):
        raise ValueError(f"asked for {n} conversations; the {split!r} splits hold {sum(len(p) for p in pools)}")
    picked = [pools[i % len(pools)][i // len(pools)] for i in range(n)]
    rng.shuffle(picked)
    return picked


def make_trace(conversations: Sequence[Messages], rate_per_s: float, new_tokens: tuple[int, int],
               seed: int) -> list[TraceRequest]:
    """A trace over `conversations` (in order): Poisson arrivals at `rate_per_s`, and an output budget
    drawn uniformly from the inclusive range `new_tokens`, both seeded."""
    low, high = new_tokens
    if not 1 <= low <= high:
        raise ValueError(f"new_tokens must be a range (low, high) with 1 <= low <= high, got {new_tokens}")
    arrivals = poisson_arrivals(len(conversations), rate_per_s, seed)
    rng = random.Random(seed + 1)  # budgets independent of the gaps
    return [TraceRequest(i, arrival, [dict(m) for m in messages], rng.randint(low, high))
            for i, (arrival, messages) in enumerate(zip(arrivals, conversations))]


def save_trace(trace: Sequence[TraceRequest], path: str | Path) -> Path:
    """Write a trace as JSON (one object per request) so another lab or a load tester replays it."""
    from common_utils.core.artifacts import atomic_file

    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps([asdict(r) for r in trace], indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_trace(path: str | Path) -> list[TraceRequest]:
    """Read a trace written by `save_trace`."""
    return [TraceRequest(**row) for row in json.loads(Path(path).read_text(encoding="utf-8"))]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default),
    so p50/p95 computed here match `numpy.percentile` and the serving tools' reports."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    below, above = math.floor(rank), math.ceil(rank)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, mean and max of a list of latencies (seconds): the numbers a serving report prints.
    p95 is the tail users notice; the mean alone hides it."""
    return {"p50": percentile(values, 50), "p95": percentile(values, 95),
            "mean": sum(values) / len(values), "max": max(values), "n": len(values)}


def empirical_cdf(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """(sorted values, fraction of values <= each): the points of a latency CDF plot."""
    ordered = sorted(values)
    return ordered, [(i + 1) / len(ordered) for i in range(len(ordered))]


class ServedRequest(Protocol):
    """What a serving summary needs from each finished request, whoever served it (an engine written in a
    lab, a vLLM or FastAPI client): times on one clock, in seconds, and the number of tokens it received."""

    arrival_s: float
    first_token_s: float
    finish_s: float
    output_tokens: int


@dataclass(frozen=True)
class RequestTiming:
    """A plain record that satisfies ServedRequest, for clients that time requests themselves."""

    arrival_s: float
    first_token_s: float
    finish_s: float
    output_tokens: int


def serving_summary(requests: Sequence[ServedRequest]) -> dict[str, Any]:
    """Throughput and latency of one replay of a trace: generated tokens per second from the first arrival
    to the last answer, end-to-end latency (arrival to last token) and time to first token (TTFT), each
    as p50 / p95 / mean / max. Throughput is what the operator pays for; p95 latency is what users feel."""
    if not requests:
        raise ValueError("serving_summary of no requests")
    tokens = sum(r.output_tokens for r in requests)
    seconds = max(r.finish_s for r in requests) - min(r.arrival_s for r in requests)
    return {"requests": len(requests), "tokens": tokens, "seconds": seconds, "throughput_tok_s": tokens / seconds,
            "latency_s": latency_summary([r.finish_s - r.arrival_s for r in requests]),
            "ttft_s": latency_summary([r.first_token_s - r.arrival_s for r in requests])}
