from __future__ import annotations

import json
import math
from pathlib import Path

from common_utils import lab_sizes
from common_utils.core.runtime import PROFILES, Sizes
from common_utils.data import DATASET_SCHEMAS, DatasetFormatError, datasets_dir, validate_jsonl
from common_utils.reference.preference_losses import dpo_loss, log1mexp, orpo_loss
from common_utils.tasks.preference import (
    KINDS,
    chosen_sft_set,
    judge,
    judge_scores,
    preference_messages,
    preference_pairs,
    win_rate,
)
from common_utils.training.preference import (
    completion_logps,
    course_dpo_config,
    course_orpo_config,
    dpo_batch_logps,
    ensure_alignment_adapter,
    heldout_log_odds_term,
    kl_to_reference,
    make_dpo_trainer,
    make_orpo_trainer,
    orpo_batch_terms,
    reply_logps,
)

import pytest
import torch
import yaml

LABS = Path(__file__).resolve().parents[1] / "01-Core_Training_Techniques" / "02-Labs"
ALIGNMENT_LABS = [LABS / "Lab-1.7-DPO_Alignment", LABS / "Lab-1.8-ORPO_Alignment"]


@pytest.fixture(scope="module")
def sizes() -> Sizes:
    """Lab-1.7's smoke sizes: Lab-01's recipe plus the alignment step budget (sft/dpo/orpo_steps)."""
    return lab_sizes(ALIGNMENT_LABS[0], "smoke")


@pytest.mark.parametrize("kind, reply, expected", [
    ("json", '{"answer": "Paris"}', True),
    ("json", '  {"answer": 42}\n', True),
    ("json", 'Sure! {"answer": "Paris"}', False),
    ("json", '```json\n{"answer": "Paris"}\n```', False),
    ("json", '{"answer": "Paris", "note": "x"}', False),
    ("json", '["Paris"]', False),
    ("brief", "Paris.", True),
    ("brief", "It is in fact Paris.", True),
    ("brief", "The capital of France is Paris.", False),
    ("brief", "   ", False),
    ("prefix", "Answer: Paris", True),
    ("prefix", "Answer:", False),
    ("prefix", "The answer: Paris", False),
])
def test_judge(kind: str, reply: str, expected: bool) -> None:
    assert judge(kind, reply) is expected


def test_judge_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown preference kind 'poem'"):
        judge("poem", "roses are red")


def test_judge_scores_per_kind() -> None:
    scores = judge_scores(["json", "json", "brief", "prefix"], ['{"answer": 1}', "no", "Yes.", "Answer: 2"])
    assert scores["judge_score"] == pytest.approx(0.75)
    assert scores["judge_json"] == pytest.approx(0.5)
    assert scores["judge_brief"] == scores["judge_prefix"] == 1.0
    assert scores["passed"] == [True, False, True, True]
    with pytest.raises(ValueError, match="equal, non-empty"):
        judge_scores(["json"], [])


def test_win_rate_counts_ties_as_half() -> None:
    result = win_rate([True, True, False, False], [False, True, False, True])
    assert (result["wins"], result["losses"], result["ties"]) == (1, 1, 2)
    assert result["win_rate"] == pytest.approx(0.5)
    assert win_rate([True, True], [False, False])["win_rate"] == 1.0
    with pytest.raises(ValueError):
        win_rate([True], [True, False])


def _rows(split: str) -> list[dict]:
    return validate_jsonl(datasets_dir() / "preference_format" / f"{split}.jsonl", DATASET_SCHEMAS["preference_format"])


def test_preference_dataset_sizes_balance_and_disjoint_prompts() -> None:
    splits = {split: _rows(split) for split in ("train", "valid", "test")}
    assert {s: len(r) for s, r in splits.items()} == {"train": 240, "valid": 30, "test": 60}
    for rows in splits.values():
        counts = {kind: sum(r["kind"] == kind for r in rows) for kind in KINDS}
        assert max(counts.values()) - min(counts.values()) <= 1, counts
    train_prompts = {r["prompt"] for r in splits["train"]}
    for held_out in ("valid", "test"):
        assert not train_prompts & {r["prompt"] for r in splits[held_out]}, f"{held_out} prompt seen in train"


def test_preference_dataset_labels_agree_with_judge() -> None:
    """The schema check: chosen passes, rejected fails, for every committed row."""
    for split in ("train", "valid", "test"):
        for row in _rows(split):
            assert judge(row["kind"], row["chosen"]) and not judge(row["kind"], row["rejected"]), row["id"]


def test_validator_rejects_a_pair_that_prefers_nothing(tmp_path: Path) -> None:
    row = {"id": "t-1", "kind": "brief", "system": "Answer in at most five words.", "prompt": "Capital of Peru?",
           "chosen": "Lima.", "rejected": "It is Lima."}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(DatasetFormatError, match="'rejected' passes the judge"):
        validate_jsonl(path, DATASET_SCHEMAS["preference_format"])


def test_trl_formats() -> None:
    pairs = preference_pairs("valid", limit=3)
    assert sorted(pairs.column_names) == ["chosen", "prompt", "rejected"]
    assert [m["role"] for m in pairs[0]["prompt"]] == ["system", "user"]
    assert pairs[0]["chosen"][0]["role"] == "assistant"
    sft = chosen_sft_set("valid", limit=3)
    assert sorted(sft.column_names) == ["completion", "prompt"]
    assert sft[0]["completion"] == pairs[0]["chosen"]
    row = _rows("valid")[0]
    assert preference_messages(row)[0]["content"] == row["system"]


def test_dpo_loss_by_hand() -> None:
    pc, pr, rc, rr = (torch.tensor([v]) for v in (-2.0, -5.0, -3.0, -4.0))
    loss, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.5)
    margin = 0.5 * ((-2.0 + 3.0) - (-5.0 + 4.0))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-margin)))
    assert chosen.item() == pytest.approx(0.5) and rejected.item() == pytest.approx(-0.5)
    same = dpo_loss(rc, rr, rc, rr, beta=0.1)[0]
    assert same.item() == pytest.approx(math.log(2)), "policy == reference gives log 2"


def test_kl_to_reference() -> None:
    assert kl_to_reference(torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -2.0])) == pytest.approx(0.5)


def _tiny_lm_config(tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)


def _perturb_lora(model) -> None:
    """Non-zero LoRA B, so the policy differs from the reference (adapter disabled)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)


def _tiny_peft_lm(tokenizer):
    """A 2-layer random Llama with the real tokenizer, wrapped in LoRA with non-zero B."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(LlamaForCausalLM(_tiny_lm_config(tokenizer)), lora)
    _perturb_lora(model)
    return model


def test_from_scratch_dpo_loss_equals_trl(tiny_lm, sizes, tmp_path: Path) -> None:
    """Our completion_logps + dpo_loss give TRL's DPOTrainer loss on the same batch
    (reference = the same model with its LoRA adapter disabled)."""
    from peft import LoraConfig
    from transformers import LlamaForCausalLM

    _, tokenizer = tiny_lm
    torch.manual_seed(0)
    small = sizes.with_overrides(batch_size=4, dpo_steps=1)
    trainer = make_dpo_trainer(LlamaForCausalLM(_tiny_lm_config(tokenizer)), tokenizer,
                               preference_pairs("valid", limit=4), course_dpo_config(small, tmp_path / "dpo", beta=0.3),
                               LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    assert "ref" not in trainer.model.peft_config, "a fresh adapter needs no reference copy"
    _perturb_lora(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch)
        logps, ref = dpo_batch_logps(trainer.model, batch)
    ours = dpo_loss(*logps.chunk(2), *ref.chunk(2), beta=0.3)[0]
    assert abs(ours.item() - math.log(2)) > 1e-3, "policy and reference must differ for the test to mean anything"
    assert ours.item() == pytest.approx(trl_loss.item(), abs=1e-4)


def test_from_scratch_orpo_loss_equals_trl(tiny_lm, sizes, tmp_path: Path) -> None:
    """Our orpo_batch_terms + orpo_loss give TRL's ORPOTrainer loss on the same batch: the NLL over the whole
    chosen sequence (prompt included, as TRL computes it) plus lam * the odds-ratio term on mean log-probs."""
    from peft import LoraConfig
    from transformers import LlamaForCausalLM

    _, tokenizer = tiny_lm
    torch.manual_seed(0)
    small = sizes.with_overrides(batch_size=4, orpo_steps=1)
    trainer = make_orpo_trainer(LlamaForCausalLM(_tiny_lm_config(tokenizer)), tokenizer,
                                preference_pairs("valid", limit=4), course_orpo_config(small, tmp_path / "orpo", beta=0.3),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    _perturb_lora(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch)
        terms = orpo_batch_terms(trainer.model, batch)
    ours, log_odds = orpo_loss(*terms, lam=0.3)
    assert ours.item() == pytest.approx(trl_loss.item(), abs=1e-4)
    assert abs(log_odds.item()) > 1e-3, "chosen and rejected must differ for the test to mean anything"


def test_orpo_loss_by_hand() -> None:
    chosen, rejected = torch.tensor([-0.5]), torch.tensor([-2.0])
    log_odds = (-0.5 - math.log(1 - math.exp(-0.5))) - (-2.0 - math.log(1 - math.exp(-2.0)))
    loss, reported = orpo_loss(torch.tensor(1.0), chosen, rejected, lam=0.1)
    assert reported.item() == pytest.approx(log_odds, rel=1e-5)
    assert loss.item() == pytest.approx(1.0 + 0.1 * math.log1p(math.exp(-log_odds)), rel=1e-5)


def test_log1mexp_is_accurate_where_the_naive_form_fails() -> None:
    x = torch.tensor([-1e-8, -1e-4, -0.69, -0.7, -5.0, -30.0])
    reference = [math.log(-math.expm1(v)) if v > -0.5 else math.log1p(-math.exp(v)) for v in x.double().tolist()]
    assert log1mexp(x).tolist() == pytest.approx(reference, rel=1e-5)
    assert not torch.isfinite(torch.log(1 - torch.exp(x[:1]))).any(), "the naive form must fail at x = -1e-8"


def test_reply_logps_matches_completion_logps(tiny_lm) -> None:
    _, tokenizer = tiny_lm
    model = _tiny_peft_lm(tokenizer).eval()
    conversation = [{"role": "system", "content": "Answer in at most five words."},
                    {"role": "user", "content": "What is 2 plus 2?"}]
    values = reply_logps(model, tokenizer, [conversation, conversation], ["4.", "It is four, I think."])
    prompt = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt + "4." + tokenizer.eos_token, return_tensors="pt", add_special_tokens=False)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    mask = torch.zeros_like(ids["input_ids"])
    mask[:, n_prompt:] = 1
    with torch.no_grad():
        single = completion_logps(model, ids["input_ids"], ids["attention_mask"], mask)
    assert values.shape == (2,)
    assert values[0].item() == pytest.approx(single.item(), abs=1e-4), "right padding must not change log-probs"


def test_reply_logps_mean_divides_by_the_reply_tokens(tiny_lm) -> None:
    _, tokenizer = tiny_lm
    model = _tiny_peft_lm(tokenizer).eval()
    conversation = [{"role": "user", "content": "What is 2 plus 2?"}]
    reply = "It is four, I think."
    total = reply_logps(model, tokenizer, [conversation], [reply])
    mean = reply_logps(model, tokenizer, [conversation], [reply], mean=True)
    n_reply = len(tokenizer(reply + tokenizer.eos_token, add_special_tokens=False)["input_ids"])
    assert mean.item() == pytest.approx(total.item() / n_reply, rel=1e-5)


def test_heldout_log_odds_term_is_orpo_preference_term(tiny_lm) -> None:
    """The held-out measure equals -lam^-1 x the preference part of orpo_loss on the same mean log-probs,
    and it is the same number twice for an unchanged model (what makes Lab-1.8's assert fail at lr 0)."""
    _, tokenizer = tiny_lm
    model = _tiny_peft_lm(tokenizer).eval()
    rows = [{"system": "Answer in at most five words.", "prompt": "What is 2 plus 2?", "chosen": "It is 4.",
             "rejected": "Well, the answer to your question is four."},
            {"system": "Begin your reply with 'Answer:'.", "prompt": "Capital of France?", "chosen": "Answer: Paris",
             "rejected": "Paris"}]
    term = heldout_log_odds_term(model, tokenizer, rows)
    conversations = [preference_messages(row) for row in rows]
    chosen = reply_logps(model, tokenizer, conversations, [r["chosen"] for r in rows], mean=True)
    rejected = reply_logps(model, tokenizer, conversations, [r["rejected"] for r in rows], mean=True)
    loss, _ = orpo_loss(torch.tensor(0.0), chosen, rejected, lam=1.0)
    assert term <= 0.0
    assert term == pytest.approx(-loss.item(), rel=1e-5)
    assert heldout_log_odds_term(model, tokenizer, rows) == term


def test_configs_carry_lab_sizes(sizes, profile, tmp_path: Path) -> None:
    dpo = course_dpo_config(sizes, tmp_path / "d")
    orpo = course_orpo_config(sizes, tmp_path / "o")
    assert (dpo.max_steps, dpo.per_device_train_batch_size, dpo.learning_rate) == (
        sizes.dpo_steps, sizes.batch_size, sizes.learning_rate)
    assert orpo.max_steps == sizes.orpo_steps and not orpo.activation_checkpointing
    assert course_orpo_config(sizes, tmp_path / "o", max_steps=3).max_steps == 3
    # explicit steps need no step budget: Lab-01's sizes declare no dpo_steps / orpo_steps
    assert course_dpo_config(profile, tmp_path / "d2", max_steps=2).max_steps == 2
    with pytest.raises(AttributeError, match="dpo_steps"):
        course_dpo_config(profile, tmp_path / "d3")


@pytest.mark.parametrize("lab", ALIGNMENT_LABS, ids=lambda lab: lab.name)
def test_alignment_labs_split_one_step_budget(lab: Path) -> None:
    """SFT warm-up + DPO (Lab-1.7) and ORPO (Lab-1.8) get the same optimizer steps, in both profiles."""
    declared = yaml.safe_load((lab / "lab.yaml").read_text(encoding="utf-8"))["sizes"]
    assert set(declared) == set(PROFILES)
    for name in PROFILES:
        budget = lab_sizes(lab, name)
        assert min(budget.sft_steps, budget.dpo_steps) >= 1, (name, str(budget))
        assert budget.sft_steps + budget.dpo_steps == budget.orpo_steps == budget.train_steps, (name, str(budget))


def test_alignment_labs_declare_the_same_sizes() -> None:
    """Lab-1.8/03 compares its ORPO run with Lab-1.7's SFT -> DPO run: same sizes, same comparison."""
    for name in PROFILES:
        assert lab_sizes(ALIGNMENT_LABS[0], name).as_dict() == lab_sizes(ALIGNMENT_LABS[1], name).as_dict(), name


def test_ensure_alignment_adapter_reuses_or_rebuilds(sizes, tmp_path: Path, monkeypatch, capsys) -> None:
    import common_utils.training.preference as preference

    calls = []

    def fake_sft(budget, run_dir):
        calls.append(("sft", budget.sft_steps))
        (Path(run_dir) / "adapter").mkdir(parents=True)
        (Path(run_dir) / "adapter" / "adapter_config.json").write_text("{}")

    def fake_preference(method, budget, run_dir, start_adapter=None, **overrides):
        calls.append((method, start_adapter, overrides))
        (Path(run_dir) / "adapter").mkdir(parents=True)
        (Path(run_dir) / "adapter" / "adapter_config.json").write_text("{}")

    monkeypatch.setattr(preference, "train_sft_baseline", fake_sft)
    monkeypatch.setattr(preference, "train_preference", fake_preference)
    sft = ensure_alignment_adapter("sft", sizes, tmp_path / "sft")
    assert sft == tmp_path / "sft" / "adapter" and calls == [("sft", sizes.sft_steps)]
    assert "not found: rebuilding" in capsys.readouterr().out
    assert ensure_alignment_adapter("sft", sizes, tmp_path / "sft") == sft and len(calls) == 1, "reused, not rebuilt"
    assert "reusing" in capsys.readouterr().out
    ensure_alignment_adapter("dpo", sizes, tmp_path / "dpo", start_adapter=sft, beta=0.5)
    assert calls[-1] == ("dpo", sft, {"beta": 0.5})
    with pytest.raises(ValueError, match="stage must be"):
        ensure_alignment_adapter("ppo", sizes, tmp_path / "ppo")


def test_reward_margins_are_read_with_loss_history() -> None:
    from types import SimpleNamespace

    from common_utils import loss_history

    log = [{"step": 1, "rewards/margins": 0.1}, {"step": 2, "loss": 1.0}, {"step": 2, "rewards/margins": 0.3}]
    assert loss_history(SimpleNamespace(state=SimpleNamespace(log_history=log)), "rewards/margins") == [
        (1, 0.1), (2, 0.3)]


@pytest.mark.parametrize("method, reference_copy", [("dpo", False), ("dpo", True), ("orpo", False)])
def test_preference_step_cost_reports_time_and_memory(tiny_lm, profile, monkeypatch, method: str,
                                                      reference_copy: bool) -> None:
    """Runs the real trainers on a 2-layer random Llama (same tokenizer) instead of the 135M model."""
    import common_utils.core.models as models
    from common_utils.training.preference import preference_step_cost

    from transformers import LlamaForCausalLM

    _, tokenizer = tiny_lm
    loads = []

    def tiny_load(name, **kwargs):
        torch.manual_seed(len(loads))
        loads.append(name)
        return LlamaForCausalLM(_tiny_lm_config(tokenizer)), tokenizer

    monkeypatch.setattr(models, "load_causal_lm", tiny_load)
    cost = preference_step_cost(method, profile.with_overrides(batch_size=2), steps=2, reference_copy=reference_copy)
    assert cost["steps"] == 2 and cost["seconds_per_step"] > 0 and cost["rss_increase_mb"] >= 0
    assert cost["method"] == method + ("+reference copy" if reference_copy else "")
    assert len(loads) == (2 if reference_copy else 1), "only DPO with a reference copy loads a second model"


def test_preference_step_cost_rejects_reference_copy_for_orpo(profile) -> None:
    from common_utils.training.preference import preference_step_cost

    with pytest.raises(ValueError, match="reference_copy"):
        preference_step_cost("orpo", profile, reference_copy=True)
