"""Timing and agreement helpers shared by the inference-optimization notebooks (Lab-2.2).

Why these exist: on a shared 2-core machine an absolute time means little (other jobs come and go),
but a RATIO of two configurations measured in turns (A, B, A, B, ...) within one run, summarised by
the median of repeats, is stable enough to assert on. Quality is measured beside speed: a faster
model that writes different tokens must say how different (`teacher_forced_agreement`).

The interleaved timer itself is `common_utils.inference.timing.interleaved_times` (shared with
Lab-2.1); this module adds what Lab-2.2 compares with it. Nothing here teaches a technique:
speculative decoding, quantization and compilation are written in the lab's notebooks. Torch is
imported inside the functions so `import common_utils` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from common_utils.inference.timing import InterleavedTimes, interleaved_times


def speed_ratios(times: InterleavedTimes, baseline: str) -> dict[str, float]:
    """Speed of every candidate relative to `baseline`: the median over rounds of
    baseline seconds / candidate seconds (paired round by round, see `InterleavedTimes.ratio`).
    Above 1 is faster than the baseline, below 1 slower; the baseline itself is 1.0."""
    if baseline not in times.seconds:
        raise KeyError(f"baseline {baseline!r} was not timed; timed: {', '.join(times.seconds)}")
    return {name: times.ratio(baseline, name) for name in times.seconds}


def compare(baseline: Callable[[], object], candidate: Callable[[], object], repeats: int = 3,
            warmup: int = 1) -> float:
    """How many times faster `candidate` is than `baseline`: both timed in turns (A, B, A, B, ...) by
    `interleaved_times`, summarised by the median of the per-round ratios."""
    times = interleaved_times({"baseline": baseline, "candidate": candidate}, repeats=repeats, warmup=warmup)
    return times.ratio("baseline", "candidate")


@dataclass
class CallCounter:
    """How many times a module's forward ran (filled in by `count_forward_calls`)."""

    calls: int = 0
    tokens: list[int] = field(default_factory=list)  # positions fed per call, when the input has them


@contextmanager
def count_forward_calls(module) -> Iterator[CallCounter]:
    """Count forward passes of `module` while the block runs (a forward hook, removed afterwards).

    Speculative decoding saves time by running the big model fewer times than it emits tokens;
    counting the passes shows that directly, free of timing noise."""
    counter = CallCounter()

    def hook(_module: Any, args: tuple, kwargs: dict) -> None:
        counter.calls += 1
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and hasattr(ids, "shape") and len(ids.shape) >= 2:
            counter.tokens.append(int(ids.shape[-1]))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield counter
    finally:
        handle.remove()


def greedy_new_tokens(model, input_ids, max_new_tokens: int, **generate_kwargs: Any) -> list[int]:
    """The token ids `model.generate` appends to one prompt with greedy decoding (the prompt removed).

    Extra keyword arguments (`prompt_lookup_num_tokens=10`, `assistant_model=draft` ...) go to
    `generate`, so every decoding technique is called the same way and compared token by token."""
    import torch

    input_ids = input_ids.to(model.device)
    with torch.inference_mode():
        output = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                max_new_tokens=max_new_tokens, **generate_kwargs)
    return output[0, input_ids.shape[1]:].tolist()


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first position where two token lists differ (a length mismatch counts), else None."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def teacher_forced_matches(model, input_ids, reference: Sequence[int]) -> list[bool]:
    """Per position of `reference`: whether `model`'s greedy next token equals the reference token when
    the model is fed the prompt plus the reference so far (one forward pass over prompt + reference).

    Why teacher-forced: a free-running comparison stops meaning anything after the first different
    token (the two continuations then see different text); feeding the same text to both measures
    how often the model would pick the reference's token, position by position."""
    import torch

    if not reference:
        raise ValueError("reference continuation is empty")
    device = model.device
    prompt = input_ids.to(device)
    ref = torch.tensor([list(reference)], dtype=torch.long, device=device)
    full = torch.cat([prompt, ref[:, :-1]], dim=1)
    with torch.inference_mode():
        logits = model(full, attention_mask=torch.ones_like(full)).logits
    predicted = logits[0, prompt.shape[1] - 1:].argmax(-1)
    return (predicted == ref[0]).tolist()


def teacher_forced_agreement(model, input_ids, reference: Sequence[int]) -> float:
    """Share of positions where `model` would pick the reference's next token (`teacher_forced_matches`):
    the token agreement a quantized model or a draft is scored by."""
    matches = teacher_forced_matches(model, input_ids, reference)
    return sum(matches) / len(matches)


# ---- the workloads the lab's notebooks time: a copy-heavy prompt, a free-writing prompt, a task ----

COPY_INSTRUCTION = "Repeat the user's text exactly, line by line."
FREE_PROMPT = "Write a short story about a lighthouse keeper."


def benchmark_prompts(copy_lines: int) -> dict[str, list[dict[str, str]]]:
    """Two chat prompts that bracket what speculative drafting can gain:
    * "copy": repeat `copy_lines` sentences of the person_extraction test split; most reply tokens
      already occur in the prompt, so prompt lookup drafts are usually right (the best case);
    * "free": write a story; nothing to copy, so drafts from the prompt are mostly wrong (the worst)."""
    from common_utils.data import load_course_dataset

    rows = load_course_dataset("person_extraction", "test", limit=copy_lines)
    text = "\n".join(rows["input"])
    return {"copy": [{"role": "system", "content": COPY_INSTRUCTION}, {"role": "user", "content": text}],
            "free": [{"role": "user", "content": FREE_PROMPT}]}


def encode_chat(tokenizer, messages: list[dict[str, str]], device=None):
    """Token ids (1, L) of one conversation with the generation prompt appended, on `device`."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    return ids if device is None else ids.to(device)


def one_shot_extraction(limit: int) -> tuple[list[list[dict[str, str]]], list[str]]:
    """(conversations, reference JSON strings) for `limit` person_extraction test rows, each with one
    worked example (the first train row) between the instruction and the question.

    Why one-shot: the untuned course model answers the zero-shot template with prose (exact match
    0.0 on 12 items, measured), so a quality cost could not show; with one example it scores 0.75
    (12 items, fp32), which leaves room for a quantized model to lose points."""
    from common_utils.data import load_course_dataset
    from common_utils.tasks.extraction import extraction_messages

    example = load_course_dataset("person_extraction", "train", limit=1)[0]
    shot = [{"role": "user", "content": example["input"]}, {"role": "assistant", "content": example["output"]}]
    rows = load_course_dataset("person_extraction", "test", limit=limit)
    conversations = []
    for row in rows:
        system, *rest = extraction_messages(row)
        conversations.append([system, *shot, *rest])
    return conversations, list(rows["output"])


def cached_forward(model, input_ids, n_tokens: int) -> Callable[[], object]:
    """A callable that runs ONE forward pass of `n_tokens` new tokens after the prompt `input_ids`,
    whose keys and values are computed once here and kept in a cache; each call crops its own
    tokens back off, so every call does the same work.

    n_tokens=1 is one decode step; n_tokens=k+1 is what speculative decoding's verify pass costs."""
    import torch
    from transformers import DynamicCache

    device = model.device
    prompt = input_ids.to(device)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        model(prompt, past_key_values=cache, use_cache=True)
    length = cache.get_seq_length()
    new = prompt[:, -1:].repeat(1, n_tokens)  # any tokens do: the cost depends on the count, not the ids

    def step() -> None:
        with torch.inference_mode():
            model(new, past_key_values=cache, use_cache=True)
        extra = cache.get_seq_length() - length
        if extra > 0:
            cache.crop(-extra)  # transformers 5.x: a negative count removes that many positions

    return step


def quality_report(model, tokenizer, prompt_ids: dict[str, Any], references: dict[str, Sequence[int]],
                   conversations: list[list[dict[str, str]]], answers: list[str], max_new_tokens: int) -> dict[str, Any]:
    """What a faster variant of the model costs in quality, in two numbers that do not depend on timing:
    * `agreement`: per prompt, the teacher-forced next-token agreement with the reference continuation
      (the fp32 model's greedy tokens);
    * `task`: `score_extraction` of its batched greedy answers to the extraction conversations."""
    from common_utils.core.generation import generate_batch
    from common_utils.tasks.extraction import score_extraction

    agreement = {name: teacher_forced_agreement(model, ids, references[name]) for name, ids in prompt_ids.items()}
    replies = generate_batch(model, tokenizer, conversations, max_new_tokens, show_progress=False)
    return {"agreement": agreement, "task": score_extraction(replies, answers), "replies": replies}
