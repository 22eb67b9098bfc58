"""Encoder classification (common_utils.training.classify) and the NLU PEFT methods, on a tiny random BERT."""

from __future__ import annotations

import json
from pathlib import Path

from common_utils import apply_peft, count_parameters, lab_sizes
from common_utils.peft.methods import get_method
from common_utils.training import classify

import pytest
import torch

LAB06 = Path(__file__).resolve().parents[1] / "01-Core_Training_Techniques" / "02-Labs" / "PEFT_Labs" / "Lab-06-BitFit"


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


@pytest.fixture()
def sizes():
    """The NLU labs' smoke sizes (Lab-06's lab.yaml), shortened to 3 training steps."""
    return lab_sizes(LAB06, "smoke").with_overrides(train_steps=3)


@pytest.fixture()
def tiny_base(monkeypatch, tokenizer):
    """Make every recipe load the tiny BERT (same seed, same head) instead of MiniLM."""
    monkeypatch.setattr(classify, "load_base_classifier", lambda sizes, num_labels=4: (tiny_bert(), tokenizer))


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


def test_train_head_false_leaves_only_the_prompts_trainable() -> None:
    model = classify.prepare_classifier(tiny_bert(), "p_tuning_v2", num_virtual_tokens=5, train_head=False)
    assert count_parameters(model).trainable == 5 * 2 * 2 * 16, "only the deep prompts may train"
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and not any("classifier" in name for name in trainable)


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


def test_finetune_classifier_trains_saves_and_reuses(tmp_path: Path, tokenizer, tiny_base, sizes) -> None:
    run = classify.finetune_classifier("bitfit", sizes, tmp_path)
    assert not run.reused and len(run.history) == 3 and 0.0 <= run.accuracy <= 1.0
    assert run.trainable == count_parameters(run.model).trainable and run.seconds > 0
    record = json.loads((tmp_path / classify.RUN_FILE).read_text())
    assert record["method"] == "bitfit" and record["fingerprint"] and record["settings"]["max_length"] == 32
    again = classify.finetune_classifier("bitfit", sizes, tmp_path)
    assert again.reused and again.history == run.history and again.accuracy == run.accuracy
    texts = ["the team won the final", "a new phone was released"]
    assert torch.equal(classify.predict_logits(run.model, tokenizer, texts),
                       classify.predict_logits(again.model, tokenizer, texts))
    changed = classify.finetune_classifier("bitfit", sizes, tmp_path, max_steps=4)
    assert not changed.reused and len(changed.history) == 4
    summary = changed.summary()
    assert summary["steps"] == 4 and summary["learning_rate"] == classify.CLASSIFY_LR["bitfit"]
    assert summary["loss_first"] == changed.history[0][1]


def test_ensure_classifier_rebuilds_once_then_reuses(tmp_path: Path, tiny_base, sizes, capsys) -> None:
    built = classify.ensure_classifier("head", sizes, tmp_path)
    assert not built.reused and "not found: rebuilding" in capsys.readouterr().out
    reused = classify.ensure_classifier("head", sizes, tmp_path)
    assert reused.reused and reused.accuracy == built.accuracy and "reusing" in capsys.readouterr().out


def test_seeds_summary_and_tables(tmp_path: Path, tiny_base, sizes) -> None:
    sizes = sizes.with_overrides(train_steps=6)  # loss_reduction compares the first and last 3 steps
    runs = {"head": classify.finetune_seeds("head", sizes, tmp_path / "head", [1, 2]),
            "bitfit": classify.finetune_seeds("bitfit", sizes, tmp_path / "bitfit", [1])}
    assert [r.settings["seed"] for r in runs["head"]] == [1, 2] and (tmp_path / "head" / "seed2" / classify.RUN_FILE).exists()
    summary = classify.seed_summary(runs)
    head = summary["head"]
    assert head["seeds"] == 2 and head["accuracy_min"] == min(r.accuracy for r in runs["head"])
    assert head["accuracy_mean"] == pytest.approx(sum(r.accuracy for r in runs["head"]) / 2)
    assert summary["bitfit"]["accuracy_std"] == 0.0 and summary["bitfit"]["seeds"] == 1
    assert "loss_reduction_min" in head and "test_loss_std" in head
    assert "head" in str(summary) and "±" in str(summary) and json.loads(json.dumps(summary)) == summary
    table = classify.runs_table(runs).splitlines()
    assert len(table) == 1 + 3 and "1e-02" in table[1]  # CLASSIFY_LR["head"]
    assert len(classify.runs_table({"one": runs["bitfit"][0]}).splitlines()) == 2


def test_untrained_scores_and_class_report(tiny_base, tokenizer, sizes, capsys) -> None:
    base = classify.untrained_scores(sizes)
    assert set(base) == {"accuracy", "loss", "n"} and base["n"] == len(classify.split_rows("test"))
    report = classify.class_report(tiny_bert(), tokenizer, sizes, name="tiny", show_errors=2)
    out = capsys.readouterr().out
    assert report.accuracy == pytest.approx(base["accuracy"]) and report.loss == pytest.approx(base["loss"])
    assert set(report.per_class) == set(classify.label_names()) and out.count("want ") == min(2, len(report.errors))
    gold = classify.split_rows("test")["label"]
    assert len(report.errors) == sum(p != y for p, y in zip(report.predictions, gold))
    assert report.worst_class == min(report.per_class.values())
    assert "margin over base +0.000" in report.versus(report.accuracy, recorded=report.accuracy)


def test_eval_logits_batching_is_exact(tokenizer, sizes) -> None:
    model = tiny_bert()
    whole = classify.eval_logits(model, tokenizer, sizes)
    assert whole.shape == (len(classify.split_rows("test")), 4)
    assert torch.equal(whole, classify.eval_logits(model, tokenizer, sizes))
    assert classify.predict_labels(model, tokenizer, classify.split_rows("test")["text"]) == whole.argmax(-1).tolist()


def test_deploy_check() -> None:
    trained = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    base = torch.tensor([[0.0, 2.0], [0.0, 2.0], [1.0, 0.5]])
    check = classify.deploy_check(trained, trained.clone(), base=base)
    assert check.max_diff == 0.0 and check.same_predictions and check.n == 3
    assert check.base_agreement == pytest.approx(2 / 3) and check.base_max_shift == pytest.approx(2.0)
    assert "identical predictions: True" in str(check) and check.metrics()["max_logit_diff"] == 0.0
    off = classify.deploy_check(trained, trained + torch.tensor([0.0, 3.0]), base=base)
    assert off.max_diff == pytest.approx(3.0) and not off.same_predictions


def test_prepare_classifier_leaves_the_callers_config_untouched() -> None:
    from peft import PromptTuningConfig

    config = PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=3)
    before = config.to_dict()
    classify.prepare_classifier(tiny_bert(), config)
    assert config.to_dict() == before


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
    batched = classify.logits_with_fixed_prompt(plain, tokenizer, prompt, texts, batch_size=1)
    assert torch.allclose(classify.predict_logits(tuned, tokenizer, texts, batch_size=1), batched, atol=1e-6)
