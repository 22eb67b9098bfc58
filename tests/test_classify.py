"""Encoder classification (common_utils.classify) and the NLU PEFT methods, on a tiny random BERT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from common_utils.training import classify
from common_utils import count_parameters
from common_utils import apply_peft
from common_utils.peft.methods import get_method


def tiny_bert(num_labels: int = 4, vocab_size: int = 30522):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=num_labels)
    return BertForSequenceClassification(config)


@pytest.fixture(scope="module")
def tokenizer():
    from common_utils import load_encoder

    return load_encoder("minilm-l6-v2", device="cpu")[1]


def test_registered_nlu_methods() -> None:
    assert get_method("bitfit").applies_itself and get_method("bitfit").family == "selective"
    assert not get_method("p_tuning").applies_itself
    assert not get_method("p_tuning_v2").applies_itself


def test_bitfit_trains_biases_and_optionally_the_head() -> None:
    model = apply_peft(tiny_bert(), "bitfit")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.endswith(".bias") or n.startswith("classifier.")}
    assert "classifier.weight" in trainable
    bias_only = apply_peft(tiny_bert(), "bitfit", train_head=False)
    assert all(n.endswith(".bias") for n, p in bias_only.named_parameters() if p.requires_grad)


def test_bitfit_rejects_a_bias_free_model() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False))
    with pytest.raises(ValueError, match="no bias terms"):
        apply_peft(model, "bitfit")


def test_p_tuning_encoder_types() -> None:
    from peft import PromptEncoderConfig

    config = get_method("p_tuning").build(encoder_reparameterization_type="LSTM")
    assert isinstance(config, PromptEncoderConfig) and config.task_type == "SEQ_CLS"
    assert str(config.encoder_reparameterization_type).endswith("LSTM")


def test_p_tuning_v2_is_deep_prefix_without_projection() -> None:
    model = classify.prepare_classifier(tiny_bert(), "p_tuning_v2", num_virtual_tokens=5)
    config = model.peft_config["default"]
    assert config.prefix_projection is False
    # one key and one value prefix of hidden size per layer, plus the (trainable) classifier head
    head = 16 * 4 + 4
    assert count_parameters(model).trainable == 5 * 2 * 2 * 16 + head


def test_prepare_classifier_baselines() -> None:
    head = classify.prepare_classifier(tiny_bert(), "head")
    assert count_parameters(head).trainable == 16 * 4 + 4
    full = classify.prepare_classifier(tiny_bert(), "full")
    assert count_parameters(full).trainable == count_parameters(full).total
    with pytest.raises(KeyError, match="baseline: full, head"):
        classify.prepare_classifier(tiny_bert(), "nope")


def test_tokenize_split_columns(tokenizer) -> None:
    data = classify.tokenize_split(tokenizer, "train", max_length=8, limit=5)
    assert set(data.column_names) == {"input_ids", "attention_mask", "labels"}
    assert len(data) == 5 and max(len(ids) for ids in data["input_ids"]) <= 8


def test_label_names() -> None:
    assert len(classify.label_names()) == 4


def test_save_and_load_trainable_round_trip(tmp_path: Path) -> None:
    trained = classify.prepare_classifier(tiny_bert(), "p_tuning", num_virtual_tokens=4)
    with torch.no_grad():
        for _, p in trained.named_parameters():
            if p.requires_grad:
                p.add_(0.5)
    path = classify.save_trainable(tmp_path / "t.safetensors", trained)
    fresh = classify.load_trainable(classify.prepare_classifier(tiny_bert(), "p_tuning", num_virtual_tokens=4), path)
    ids = torch.tensor([[101, 2000, 2001, 102]])
    trained.eval()
    fresh.eval()
    assert torch.equal(trained(input_ids=ids).logits, fresh(input_ids=ids).logits)
    with pytest.raises(ValueError, match="same method"):
        classify.load_trainable(classify.prepare_classifier(tiny_bert(), "head"), path)


def test_finetune_classifier_trains_saves_and_reuses(tmp_path: Path, tokenizer, monkeypatch, profile) -> None:
    monkeypatch.setattr(classify, "load_base_classifier", lambda profile, num_labels=4: (tiny_bert(), tokenizer))
    run = classify.finetune_classifier("bitfit", profile, tmp_path, max_steps=3)
    assert not run.reused and len(run.history) == 3 and 0.0 <= run.accuracy <= 1.0
    assert run.trainable == count_parameters(run.model).trainable and run.seconds > 0
    record = json.loads((tmp_path / classify.RUN_FILE).read_text())
    assert record["method"] == "bitfit" and record["fingerprint"]
    again = classify.finetune_classifier("bitfit", profile, tmp_path, max_steps=3)
    assert again.reused and again.history == run.history and again.accuracy == run.accuracy
    texts = ["the team won the final", "a new phone was released"]
    assert torch.equal(classify.predict_logits(run.model, tokenizer, texts),
                       classify.predict_logits(again.model, tokenizer, texts))
    changed = classify.finetune_classifier("bitfit", profile, tmp_path, max_steps=4)
    assert not changed.reused and len(changed.history) == 4


def test_fixed_prompt_reproduces_p_tuning_without_the_encoder(tokenizer) -> None:
    from transformers import BertForSequenceClassification

    tuned = classify.prepare_classifier(tiny_bert(), "p_tuning", num_virtual_tokens=3)
    texts = ["the team won the final", "a new phone"]
    prompt = tuned.get_prompt_embedding_to_save("default").detach()
    plain = BertForSequenceClassification(tuned.base_model.config)
    state = {k: v for k, v in tuned.base_model.state_dict().items() if "modules_to_save" not in k
             and "original_module" not in k}
    state.update({f"classifier.{k}": v for k, v in tuned.base_model.classifier.modules_to_save["default"].state_dict().items()})
    plain.load_state_dict(state)
    expected = classify.predict_logits(tuned, tokenizer, texts)
    got = classify.logits_with_fixed_prompt(plain, tokenizer, prompt, texts)
    assert torch.allclose(expected, got, atol=1e-6)
