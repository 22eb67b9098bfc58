"""The course's main task: extract a person's name, age and city from a sentence as a JSON object.

Owns the `person_extraction` dataset's schema, the chat template used for training and evaluation,
and the scorer (exact match, JSON validity, per-field accuracy) that checkpoint cells assert on.
"""

from __future__ import annotations

import json
from typing import Any

from common_utils.data import Schema, register_dataset

DATASET = "person_extraction"


def _check_extraction(row: dict[str, Any]) -> str | None:
    try:
        answer = json.loads(row["output"])
    except json.JSONDecodeError as error:
        return f"'output' is not valid JSON ({error.msg})"
    if not isinstance(answer, dict) or set(answer) != {"name", "age", "city"}:
        return "'output' must be a JSON object with exactly the keys name, age, city"
    if not isinstance(answer["age"], int):
        return "'output'.age must be an integer"
    return None


register_dataset(DATASET, Schema({"id": str, "instruction": str, "input": str, "output": str}, _check_extraction))


def extraction_messages(row: dict[str, Any], with_answer: bool = False) -> list[dict[str, str]]:
    """Chat messages for one person_extraction row; the same template for training and evaluation.

    The instruction goes in the system turn: it replaces the chat template's default system prompt,
    which keeps examples short (~70 tokens), and that is most of what a CPU training step costs."""
    messages = [{"role": "system", "content": row["instruction"]}, {"role": "user", "content": row["input"]}]
    if with_answer:
        messages.append({"role": "assistant", "content": row["output"]})
    return messages


def to_prompt_completion(row: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """TRL's conversational prompt-completion format: loss on the completion (answer + EOS) only."""
    messages = extraction_messages(row, with_answer=True)
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The reply parsed as a JSON object, or None. Strict: the whole reply must be the object."""
    try:
        value = json.loads(text.strip())
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def first_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object anywhere in the reply (inside a code fence, after a preamble, before
    repeats), or None. Lenient: it separates knowing the answer from following the format."""
    decoder = json.JSONDecoder()
    for start in (i for i, char in enumerate(text) if char == "{"):
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def score_extraction(predictions: list[str], references: list[str | dict[str, Any]],
                     lenient: bool = False) -> dict[str, float]:
    """Exact match (parsed object equals the reference), JSON validity, and per-field accuracy.

    Strict (default, what the course asserts): the whole reply must be the object. `lenient=True`
    scores the first object found anywhere in the reply (`first_json_object`)."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need equal, non-empty lists; got {len(predictions)} predictions, {len(references)} references")
    refs = [json.loads(r) if isinstance(r, str) else r for r in references]
    parse = first_json_object if lenient else parse_json_object
    parsed = [parse(p) for p in predictions]
    n = len(refs)
    scores = {
        "n": n,
        "exact_match": sum(p == r for p, r in zip(parsed, refs)) / n,
        "json_valid": sum(p is not None for p in parsed) / n,
    }
    for key in refs[0]:
        scores[f"field_{key}"] = sum(p is not None and p.get(key) == r[key] for p, r in zip(parsed, refs)) / n
    return scores
