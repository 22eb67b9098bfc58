"""Chapter 02 plumbing from Lab-2.1: chat prompts of an exact token length and interleaved timing."""

from __future__ import annotations

from common_utils import load_tokenizer
from common_utils.inference.prompts import chat_prompt_ids, template_parts
from common_utils.inference.timing import InterleavedTimes, interleaved_times

import pytest


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("smollm2-135m-instruct")


@pytest.mark.parametrize("n_tokens", [64, 128, 700])
def test_prompt_has_the_exact_length_and_the_chat_template(tokenizer, n_tokens: int) -> None:
    ids = chat_prompt_ids(tokenizer, n_tokens)
    head, tail = template_parts(tokenizer, "Summarize the following text in a few sentences.")
    assert len(ids) == n_tokens
    assert ids[:len(head)] == head and ids[-len(tail):] == tail  # passage in between, template intact
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")


def test_a_short_system_turn_makes_shorter_prompts_possible(tokenizer) -> None:
    default_head, _ = template_parts(tokenizer, "Hi.")
    short_head, _ = template_parts(tokenizer, "Hi.", system="Be brief.")
    assert len(short_head) < len(default_head)
    assert len(chat_prompt_ids(tokenizer, 24, instruction="Hi.", system="Be brief.")) == 24


def test_too_short_a_prompt_names_the_minimum(tokenizer) -> None:
    with pytest.raises(ValueError, match="at least"):
        chat_prompt_ids(tokenizer, 5)
    with pytest.raises(ValueError, match="empty"):
        chat_prompt_ids(tokenizer, 100, passage="")


def test_interleaved_times_runs_candidates_round_by_round() -> None:
    calls: list[str] = []
    times = interleaved_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4  # one warm-up round, then three timed rounds, interleaved
    assert set(times.seconds) == {"a", "b"} and all(len(v) == 3 for v in times.seconds.values())
    with pytest.raises(ValueError, match="repeats"):
        interleaved_times({"a": lambda: None}, repeats=0)
    with pytest.raises(ValueError, match="candidate"):
        interleaved_times({}, repeats=1)


def test_ratio_is_the_median_of_paired_rounds() -> None:
    times = InterleavedTimes({"slow": [4.0, 100.0, 6.0], "fast": [1.0, 10.0, 2.0]})
    assert times.ratio("slow", "fast") == 4.0  # per-round ratios 4, 10, 3 -> median 4
    assert times.median("slow") == 6.0
    assert times.medians() == {"slow": 6.0, "fast": 2.0}
