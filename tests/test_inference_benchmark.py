"""Lab-2.2's package helpers (common_utils.inference.benchmark): speed ratios from interleaved times,
forward-pass counting, greedy continuations, teacher-forced agreement, the benchmark workloads and the
cached one-pass timer. Tiny random Llama models keep it fast; the course data sets are local files."""

from __future__ import annotations

import time

from common_utils.inference.benchmark import (
    COPY_INSTRUCTION,
    benchmark_prompts,
    cached_forward,
    compare,
    count_forward_calls,
    first_difference,
    greedy_new_tokens,
    one_shot_extraction,
    speed_ratios,
    teacher_forced_agreement,
)
from common_utils.inference.timing import InterleavedTimes

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB = 61


def _tiny(layers: int = 2, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=None, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None  # never stop early: lengths are part of the checks
    model.generation_config.pad_token_id = 0
    return model


def _prompt(length: int = 12) -> torch.Tensor:
    return torch.arange(2, 2 + length).remainder(VOCAB)[None]


def test_speed_ratios_are_paired_medians_and_name_the_baseline() -> None:
    times = InterleavedTimes({"base": [2.0, 4.0, 2.0], "fast": [1.0, 1.0, 1.0], "slow": [4.0, 8.0, 4.0]})
    ratios = speed_ratios(times, "base")
    assert ratios == pytest.approx({"base": 1.0, "fast": 2.0, "slow": 0.5})
    with pytest.raises(KeyError, match="not timed"):
        speed_ratios(times, "missing")


def test_compare_sees_which_callable_is_faster() -> None:
    ratio = compare(lambda: time.sleep(0.03), lambda: time.sleep(0.005), repeats=3, warmup=0)
    assert ratio > 2.0


def test_first_difference() -> None:
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2


def test_greedy_new_tokens_counts_one_forward_per_token() -> None:
    model = _tiny()
    with count_forward_calls(model) as calls:
        tokens = greedy_new_tokens(model, _prompt(), 6)
    assert len(tokens) == 6 and all(0 <= t < VOCAB for t in tokens)
    assert calls.calls == 6  # prefill (which also yields token 1) + 5 decode steps
    assert calls.tokens[0] == _prompt().shape[1] and set(calls.tokens[1:]) == {1}
    assert greedy_new_tokens(model, _prompt(), 6) == tokens  # greedy is deterministic


def test_teacher_forced_agreement_is_one_on_own_greedy_and_lower_elsewhere() -> None:
    model = _tiny()
    own = greedy_new_tokens(model, _prompt(), 8)
    assert teacher_forced_agreement(model, _prompt(), own) == 1.0
    other = [(t + 1) % VOCAB for t in own]
    assert teacher_forced_agreement(model, _prompt(), other) == 0.0
    with pytest.raises(ValueError):
        teacher_forced_agreement(model, _prompt(), [])


def test_cached_forward_repeats_the_same_work_and_restores_the_cache() -> None:
    model = _tiny()
    step = cached_forward(model, _prompt(10), 4)
    with count_forward_calls(model) as calls:
        step()
        step()
    assert calls.tokens == [4, 4]  # each call scores 4 new positions after the cached prompt


def test_benchmark_prompts_and_one_shot_task_come_from_the_course_data() -> None:
    prompts = benchmark_prompts(3)
    assert prompts["copy"][0] == {"role": "system", "content": COPY_INSTRUCTION}
    assert len(prompts["copy"][1]["content"].splitlines()) == 3
    assert prompts["free"][0]["role"] == "user"
    conversations, answers = one_shot_extraction(2)
    assert len(conversations) == len(answers) == 2
    assert [m["role"] for m in conversations[0]] == ["system", "user", "assistant", "user"]
    assert conversations[0][2]["content"].startswith("{") and answers[0].startswith("{")
