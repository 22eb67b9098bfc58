from __future__ import annotations

import json
import math
import random

import pytest

from common_utils import generate_batch, parse_json_object, score_extraction
from common_utils.evaluation import perplexity

REFERENCE = {"name": "Alice Silva", "age": 31, "city": "Lisbon"}


@pytest.mark.parametrize("text,expected", [
    ('{"name": "Ana", "age": 3}', {"name": "Ana", "age": 3}),
    ('  {"a": 1}\n', {"a": 1}),
    ('{"a": 1} and some trailing words', None),
    ('Sure! {"a": 1}', None),
    ("[1, 2, 3]", None),
    ('"just a string"', None),
    ("", None),
    ("{'a': 1}", None),
])
def test_parse_json_object_is_strict(text: str, expected: dict | None) -> None:
    assert parse_json_object(text) == expected


def test_score_extraction_counts_exact_valid_and_fields() -> None:
    reordered = json.dumps({"city": "Lisbon", "age": 31, "name": "Alice Silva"})
    predictions = [
        json.dumps(REFERENCE),                                     # exact
        reordered,                                                 # exact: key order must not matter
        json.dumps({**REFERENCE, "age": 32}),                      # valid, age wrong
        '{"name": "Alice Silva", "age": 31, "city": "Lisbon"} ok',  # trailing text: invalid
    ]
    scores = score_extraction(predictions, [json.dumps(REFERENCE)] * 3 + [REFERENCE])
    assert scores["n"] == 4
    assert scores["exact_match"] == pytest.approx(2 / 4)
    assert scores["json_valid"] == pytest.approx(3 / 4)
    assert scores["field_name"] == pytest.approx(3 / 4)
    assert scores["field_age"] == pytest.approx(2 / 4)
    assert scores["field_city"] == pytest.approx(3 / 4)


def test_score_extraction_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 predictions, 1 references"):
        score_extraction(["{}", "{}"], [REFERENCE])
    with pytest.raises(ValueError):
        score_extraction([], [])


NATURAL = [
    "The cat sat on the mat and looked out of the window at the rain.",
    "She went to the market this morning to buy some fresh bread and milk.",
]


def _shuffle_words(text: str, seed: int) -> str:
    words = text.split()
    shuffled = words[:]
    random.Random(seed).shuffle(shuffled)
    assert shuffled != words
    return " ".join(shuffled)


@pytest.mark.slow
def test_perplexity_prefers_natural_english(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    natural = perplexity(model, tokenizer, NATURAL)
    shuffled = perplexity(model, tokenizer, [_shuffle_words(t, seed) for seed, t in enumerate(NATURAL)])
    assert math.isfinite(natural) and natural > 1
    assert math.isfinite(shuffled)
    assert natural < shuffled, f"natural {natural:.1f} vs shuffled {shuffled:.1f}"


@pytest.mark.slow
def test_generate_batch_answers_and_restores_padding_side(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    assert tokenizer.padding_side == "right"
    question = [{"role": "user", "content": "What is the capital of France?"}]
    [answer] = generate_batch(model, tokenizer, [question], max_new_tokens=12, show_progress=False)
    assert "Paris" in answer
    assert tokenizer.padding_side == "right", "generate_batch must restore the tokenizer's padding side"


class _BrokenModel:
    device = "cpu"

    def eval(self) -> None:
        pass

    def generate(self, **kwargs):
        raise RuntimeError("boom")


@pytest.mark.slow
def test_generate_batch_restores_padding_side_on_error(tiny_lm) -> None:
    _, tokenizer = tiny_lm
    with pytest.raises(RuntimeError, match="boom"):
        generate_batch(_BrokenModel(), tokenizer, [[{"role": "user", "content": "Hi"}]], max_new_tokens=2,
                       show_progress=False)
    assert tokenizer.padding_side == "right"
