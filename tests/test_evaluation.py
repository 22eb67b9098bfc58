from __future__ import annotations

import json
import math
import random

from common_utils import generate_batch, parse_json_object, score_extraction
from common_utils.evaluation import perplexity

import pytest

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


# --- common_utils.training.peft_lab: the scoring and comparison steps PEFT Labs 01-05 share ---------------------


def _rows(n: int = 3):
    from datasets import Dataset

    people = [{"name": f"P{i}", "age": 20 + i, "city": "Lisbon"} for i in range(n)]
    return Dataset.from_list([{"input": f"P{i} is {20 + i}, from Lisbon.", "output": json.dumps(person)}
                              for i, person in enumerate(people)])


def _lab(tmp_path):
    from types import SimpleNamespace

    from common_utils.training.peft_lab import ExtractionLab

    return ExtractionLab(SimpleNamespace(eval_samples=3, max_new_tokens=8), tmp_path / "outputs")


def test_score_table_has_a_delta_column_for_two_models_only() -> None:
    from common_utils.training.peft_lab import score_table

    base = score_extraction(["no"], [REFERENCE])
    tuned = score_extraction([json.dumps(REFERENCE)], [REFERENCE])
    two = score_table({"base": base, "ia3": tuned}).splitlines()
    assert two[0].split() == ["metric", "base", "ia3", "delta"]
    assert two[1].split() == ["exact_match", "0.000", "1.000", "+1.000"]
    three = score_table({"base": base, "a": tuned, "b": base}).splitlines()
    assert three[0].split() == ["metric", "base", "a", "b"] and len(three) == 6


def test_lab_score_records_the_section_and_mistakes_lists_the_wrong_rows(tmp_path, capsys) -> None:
    from common_utils import read_metrics

    lab, rows = _lab(tmp_path), _rows()
    good = list(rows["output"])
    bad = [good[0], "I cannot answer", good[2].replace("Lisbon", "Porto")]
    scores = lab.score({"base": bad, "lora": good}, rows=rows)
    assert scores["lora"]["exact_match"] == 1.0 and scores["base"]["exact_match"] == pytest.approx(1 / 3)
    assert read_metrics(lab.metrics)["inference"] == scores
    lab.score({"other": good}, section=None, rows=rows)
    assert list(read_metrics(lab.metrics)) == ["inference"], "section=None records nothing"
    wrong = lab.mistakes(bad, rows=rows)
    assert [row["input"] for row, _ in wrong] == [rows[1]["input"], rows[2]["input"]]
    assert "2 mistake(s) out of 3" in capsys.readouterr().out


def test_lab_show_prints_each_model_under_the_row(tmp_path, capsys) -> None:
    lab, rows = _lab(tmp_path), _rows()
    lab.show({"base": ["x", "y", "z"], "tuned": ["1", "2", "3"]}, n=2, rows=rows)
    out = capsys.readouterr().out
    assert out.count("want") == 2 and "tuned: '2'" in out and "'z'" not in out


def test_compare_logits_ignores_padding_unless_asked() -> None:
    from common_utils.training.peft_lab import compare_logits

    import torch

    first = torch.zeros(1, 3, 2)
    second = first.clone()
    second[0, 2] = 5.0  # a padded position
    first[0, 0, 0] = -4.0
    batch = {"attention_mask": torch.tensor([[1, 1, 0]])}
    gap = compare_logits(first, second, batch)
    assert (gap.max_abs, gap.scale, gap.relative) == (4.0, 4.0, 1.0)
    assert compare_logits(first, second, batch, include_padding=True).max_abs == 5.0
    assert "4.00e+00" in str(gap)
    soft_prompt = torch.zeros(1, 5, 2)  # two virtual tokens in front of the batch's three positions
    shifted = soft_prompt.clone()
    shifted[0, 0] = 2.0
    shifted[0, 4] = 9.0  # padded
    assert compare_logits(soft_prompt, shifted, batch).max_abs == 2.0
    assert compare_logits(soft_prompt, shifted, batch, include_padding=True).max_abs == 9.0


def test_forward_latency_interleaves_rounds_and_reports_overhead(capsys) -> None:
    from common_utils.training.peft_lab import forward_latency_ms

    order = []
    latency = forward_latency_ms({"base": lambda: order.append("base"), "prompt": lambda: order.append("prompt")},
                                 rounds=2, repeats=1, warmup=0)
    assert order == ["base", "prompt", "base", "prompt"], "each round times every pass"
    assert set(latency.ms) == {"base", "prompt"} and latency.overhead("base") == 0.0
    assert "load average" in capsys.readouterr().out


@pytest.mark.slow
def test_chat_batch_and_forward_pass_on_the_course_model(tiny_lm) -> None:
    from common_utils.training.peft_lab import chat_batch, compare_logits, forward_pass, logits_of

    import torch

    model, tokenizer = tiny_lm
    batch = chat_batch(tokenizer, [{"instruction": "Extract.", "input": "Ana is 3."},
                                   {"instruction": "Extract.", "input": "Bo, 40, lives in a town by the sea."}])
    assert batch["input_ids"].shape[0] == 2 and batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    logits = logits_of(model, batch)
    assert logits.dtype == torch.float32 and compare_logits(logits, model, batch).max_abs == 0.0
    forward_pass(model, batch)()  # runs; adapter=False needs a peft model's disable_adapter()


@pytest.mark.parametrize("text,expected", [
    ('```json\n{"a": 1}\n```', {"a": 1}),
    ('Sure! {"a": 1} {"b": 2}', {"a": 1}),
    ('{not json} then {"x": [1]}', {"x": [1]}),
    ("[1, 2]", None),
    ("no object here", None),
])
def test_first_json_object_finds_the_answer_inside_a_chatty_reply(text: str, expected: dict | None) -> None:
    from common_utils.tasks.extraction import first_json_object

    assert first_json_object(text) == expected


def test_lenient_scoring_separates_format_from_knowledge() -> None:
    """A fenced, correct answer: strict exact match 0 (format), lenient 1 (knowledge)."""
    fenced = f"```json\n{json.dumps(REFERENCE)}\n```"
    assert score_extraction([fenced], [REFERENCE])["exact_match"] == 0.0
    assert score_extraction([fenced], [REFERENCE], lenient=True)["exact_match"] == 1.0


def test_unseen_extraction_slice_shares_no_name_city_or_template_with_train() -> None:
    from common_utils import load_course_dataset

    train, unseen = load_course_dataset("person_extraction", "train"), load_course_dataset("person_extraction", "test_unseen")
    seen_words = {word.strip(".,;:()") for text in train["input"] for word in text.split()}
    for answer in unseen["output"]:
        person = json.loads(answer)
        assert not set(person["name"].split()) & seen_words, person
        assert person["city"].split()[0] not in seen_words, person
    assert len(unseen) == 40
