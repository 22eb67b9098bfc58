from __future__ import annotations

import json
import math
from pathlib import Path

from common_utils import lab_sizes
from common_utils.core.runtime import PROFILES, Sizes
from common_utils.data import DATASET_SCHEMAS, DatasetFormatError, datasets_dir, validate_jsonl
from common_utils.reference.preference_losses import chosen_nll, dpo_loss, log1mexp, orpo_loss
from common_utils.tasks.preference import (
    BREVITY_DATASET,
    KINDS,
    LIST_LIMIT,
    LIST_MIN,
    brevity_scores,
    chosen_sft_set,
    count_list_items,
    judge,
    judge_brevity,
    judge_scores,
    preference_messages,
    preference_pairs,
    sign_test_p,
    win_rate,
)
from common_utils.training.preference import (
    alignment_dataset,
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


@pytest.mark.parametrize("wins, losses", [(0, 0), (5, 0), (14, 10), (3, 9), (25, 1)])
def test_sign_test_matches_scipy(wins: int, losses: int) -> None:
    from scipy.stats import binomtest

    expected = binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue if wins + losses else 1.0
    assert sign_test_p(wins, losses) == pytest.approx(expected, rel=1e-12)


def test_win_rate_carries_the_sign_test() -> None:
    result = win_rate([True] * 6 + [False] * 4, [False] * 5 + [True] * 5)
    assert (result["wins"], result["losses"], result["ties"]) == (5, 4, 1)
    assert result["p_value"] == pytest.approx(sign_test_p(5, 4))
    assert win_rate([True, False], [True, False])["p_value"] == 1.0  # no discordant prompt, no evidence


@pytest.mark.parametrize("reply, items", [
    ("apple, banana, pear.", 3),
    ("Apples, bananas and pears", 3),
    ("ice cream", 1),
    ("hawk, goose, swan, crow, duck.", 5),
    ("Sure, here are some fruits that people like to eat", None),
    ("1. apple\n2. pear", None),
    ("", None),
    ("   .", None),
])
def test_count_list_items(reply: str, items: int | None) -> None:
    assert count_list_items(reply) == items
    assert judge_brevity(reply) is (items is not None and LIST_MIN <= items <= LIST_LIMIT)


def test_brevity_scores_split_the_failures() -> None:
    scores = brevity_scores(["a, b.", "a, b, c, d.", "This is a whole sentence about it.", "x"])
    assert scores["passed"] == [True, False, False, False]
    assert (scores["judge_score"], scores["over_limit"], scores["not_a_list"], scores["single_item"]) == (
        0.25, 0.25, 0.25, 0.25)
    assert scores["mean_items"] == pytest.approx((2 + 4 + 1) / 3)
    with pytest.raises(ValueError, match="non-empty"):
        brevity_scores([])


def _brevity_rows(split: str) -> list[dict]:
    return validate_jsonl(datasets_dir() / BREVITY_DATASET / f"{split}.jsonl", DATASET_SCHEMAS[BREVITY_DATASET])


def test_brevity_dataset_holds_out_categories_and_templates() -> None:
    splits = {split: _brevity_rows(split) for split in ("train", "valid", "test")}
    assert {s: len(r) for s, r in splits.items()} == {"train": 240, "valid": 12, "test": 60}
    train_categories = {r["category"] for r in splits["train"]}
    for held_out in ("valid", "test"):
        rows = splits[held_out]
        assert not train_categories & {r["category"] for r in rows}, f"{held_out} category seen in train"
        assert len({r["prompt"] for r in rows}) == len(rows), f"{held_out} repeats a prompt: paired tests need distinct ones"
    assert len({r["category"] for r in splits["test"][:10]}) == 10, "any first k test prompts must mix categories"


def test_brevity_labels_are_relative() -> None:
    """Every rejected list breaks the limit and is longer than its chosen list; the chosen lists are
    within the limit only part of the time (the premise of Lab-1.7's same-budget comparison)."""
    rows = _brevity_rows("train")
    assert all(count_list_items(r["chosen"]) < count_list_items(r["rejected"]) for r in rows)
    assert not any(judge_brevity(r["rejected"]) for r in rows)
    within = sum(judge_brevity(r["chosen"]) for r in rows) / len(rows)
    assert 0.3 < within < 0.7, within


def test_brevity_pairs_fit_max_length(sizes) -> None:
    """lab.yaml's max_length cuts no training pair (a cut rejected list would lose what makes it worse)."""
    from common_utils import load_tokenizer

    tokenizer = load_tokenizer(sizes.model)
    longest = 0
    for pair in preference_pairs(dataset=alignment_dataset(sizes)):
        for side in ("chosen", "rejected"):
            ids = tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=True, return_dict=False)
            longest = max(longest, len(ids))
    assert longest <= sizes.max_length, (longest, sizes.max_length)


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


@pytest.mark.parametrize("dataset, row, message", [
    ("preference_format", {"id": "t-1", "kind": "brief", "system": "Answer in at most five words.",
                           "prompt": "Capital of Peru?", "chosen": "Lima.", "rejected": "It is Lima."},
     "'rejected' passes the judge"),
    (BREVITY_DATASET, {"id": "t-1", "category": "fruits", "system": "s", "prompt": "Name some fruits.",
                       "chosen": "apple, pear, plum, kiwi, fig.", "rejected": "apple, pear, plum, kiwi."},
     "must be the shorter one"),
], ids=["format-prefers-nothing", "brevity-longer-chosen"])
def test_validator_rejects_a_pair_that_prefers_nothing(tmp_path: Path, dataset: str, row: dict, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(DatasetFormatError, match=message):
        validate_jsonl(path, DATASET_SCHEMAS[dataset])


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


@pytest.mark.parametrize("loss_type", [["sigmoid"], ["sigmoid", "sft"]], ids="+".join)
def test_from_scratch_dpo_loss_equals_trl(tiny_lm, sizes, tmp_path: Path, loss_type: list[str]) -> None:
    """Our completion_logps + dpo_loss (+ chosen_nll for TRL's "sft" term) give TRL's DPOTrainer loss on
    the same batch (reference = the same model with its LoRA adapter disabled)."""
    from peft import LoraConfig
    from transformers import LlamaForCausalLM

    _, tokenizer = tiny_lm
    torch.manual_seed(0)
    small = sizes.with_overrides(batch_size=4, dpo_steps=1)
    config = course_dpo_config(small, tmp_path / "dpo", beta=0.3, loss_type=loss_type)
    trainer = make_dpo_trainer(LlamaForCausalLM(_tiny_lm_config(tokenizer)), tokenizer,
                               preference_pairs("valid", limit=4, dataset=alignment_dataset(sizes)), config,
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
    if "sft" in loss_type:
        ours = ours + chosen_nll(logps.chunk(2)[0], batch["completion_mask"][:, 1:].chunk(2)[0].sum())
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


def test_alignment_labs_declare_the_same_recipe() -> None:
    """Both labs train with the same budget and recipe; only the data (and Lab-1.7's DPO loss list) differ,
    so Lab-1.8/03 rebuilds its own SFT -> DPO route on preference_format instead of reusing Lab-1.7's."""
    own = {"dataset", "dpo_loss"}
    for name in PROFILES:
        dpo_lab, orpo_lab = (lab_sizes(lab, name).as_dict() for lab in ALIGNMENT_LABS)
        assert {k: v for k, v in dpo_lab.items() if k not in own} == orpo_lab, name
        assert dpo_lab["dataset"] == BREVITY_DATASET and alignment_dataset(lab_sizes(ALIGNMENT_LABS[1], name)) == "preference_format"


def test_dpo_config_reads_the_lab_loss_list(sizes, tmp_path: Path) -> None:
    assert course_dpo_config(sizes, tmp_path / "d").loss_type == ["sigmoid", "sft"]
    assert course_dpo_config(sizes, tmp_path / "d", loss_type=["sigmoid"]).loss_type == ["sigmoid"]


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
