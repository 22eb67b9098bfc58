"""common_utils.tasks.alpaca: records become Alpaca examples, the template renders as Stanford Alpaca's,
and only response tokens carry loss."""

from __future__ import annotations

from common_utils import load_tokenizer
from common_utils.data import IGNORE_INDEX
from common_utils.tasks.alpaca import (
    PROMPT_NO_INPUT,
    alpaca_prompt,
    alpaca_sft_tensors,
    load_alpaca,
    to_alpaca,
)

import pytest

RECORD = {"id": "x-1", "instruction": "Extract the name.", "input": "Ada, 36, Paris.", "output": '{"name": "Ada"}'}


def test_to_alpaca_keeps_the_three_fields_and_drops_others() -> None:
    assert to_alpaca(RECORD) == {"instruction": "Extract the name.", "input": "Ada, 36, Paris.",
                                 "output": '{"name": "Ada"}'}
    assert to_alpaca({"instruction": "Say hi.", "output": "hi"})["input"] == ""


@pytest.mark.parametrize("bad", [{"instruction": "x"}, {"instruction": " ", "output": "y"}, {}])
def test_to_alpaca_rejects_records_without_instruction_or_output(bad) -> None:
    with pytest.raises(ValueError, match="instruction and an output"):
        to_alpaca(bad)


def test_prompt_has_the_input_section_only_when_there_is_input() -> None:
    with_input = alpaca_prompt(RECORD)
    assert "### Input:\nAda, 36, Paris.\n\n### Response:\n" in with_input and with_input.endswith("### Response:\n")
    assert RECORD["output"] not in with_input
    no_input = alpaca_prompt({"instruction": "Say hi.", "input": ""})
    assert no_input == PROMPT_NO_INPUT.format(instruction="Say hi.") and "### Input" not in no_input


def test_course_data_loads_in_alpaca_format() -> None:
    rows = load_alpaca("valid", limit=3)
    assert len(rows) == 3 and all(set(row) == {"instruction", "input", "output"} for row in rows)


def test_hub_source_falls_back_to_course_data_offline(monkeypatch, capsys) -> None:
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    rows = load_alpaca("train", limit=2, source="hub")
    assert len(rows) == 2 and "using the course's person_extraction data" in capsys.readouterr().out
    with pytest.raises(ValueError, match="source"):
        load_alpaca("train", source="web")


def test_only_response_tokens_carry_loss() -> None:
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    batch = alpaca_sft_tensors(tokenizer, [RECORD, {"instruction": "Say hi.", "output": "hi"}], seq_len=96)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, 96)
    for row in range(2):
        kept = batch["labels"][row] != IGNORE_INDEX
        text = tokenizer.decode(batch["input_ids"][row][kept])
        assert text.startswith(["{\"name\": \"Ada\"}", "hi"][row]) and text.endswith(tokenizer.eos_token)
        padding = batch["attention_mask"][row] == 0
        assert padding.any() and (batch["labels"][row][padding] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="seq_len"):
        alpaca_sft_tensors(tokenizer, [RECORD], seq_len=8)
    short = {"instruction": "Hi", "output": "hi"}
    kept = alpaca_sft_tensors(tokenizer, [RECORD, short], seq_len=40, drop_long=True)
    assert kept["input_ids"].shape == (1, 40)  # the long prompt is dropped, the short one kept
    with pytest.raises(ValueError, match="no example fits"):
        alpaca_sft_tensors(tokenizer, [RECORD], seq_len=8, drop_long=True)


def test_eval_loss_and_generation_run_on_the_course_model(tiny_lm) -> None:
    from common_utils.tasks.alpaca import alpaca_eval_loss, alpaca_generate

    model, tokenizer = tiny_lm
    examples = load_alpaca("valid", limit=3)
    loss_small_batches = alpaca_eval_loss(model, tokenizer, examples, seq_len=128, batch_size=1)
    loss_one_batch = alpaca_eval_loss(model, tokenizer, examples, seq_len=128, batch_size=3)
    assert 0 < loss_one_batch < 20 and loss_small_batches == pytest.approx(loss_one_batch, rel=1e-4)
    side = tokenizer.padding_side
    replies = alpaca_generate(model, tokenizer, examples[:2], max_new_tokens=4)
    assert len(replies) == 2 and all(isinstance(r, str) and r for r in replies)
    assert tokenizer.padding_side == side  # restored after the left-padded batch
