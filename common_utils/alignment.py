"""Preference alignment (DPO, ORPO) on the course's `preference_format` dataset, measured by a rule.

The judge is a rule, not a model: each prompt's system turn asks for one format (a JSON object, at
most five words, or a reply that begins with 'Answer:'), and `judge` checks exactly that. So "did
alignment work?" is a number a checkpoint cell can assert, not an impression of sample outputs.

Also here: a from-scratch DPO loss (to check against TRL's), sequence log-probabilities of
completions, TRL configs with course defaults, and the SFT -> DPO recipe that later stages call to
rebuild a missing artifact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFERENCE_DATASET = "preference_format"
KINDS = ("json", "brief", "prefix")
MAX_BRIEF_WORDS = 5
REQUIRED_PREFIX = "Answer:"
# DPO's beta (KL strength). 0.1 is the DPO paper's default; the smoke calibration is in the lab README.
DPO_BETA = 0.1
# ORPO's lambda (weight of the odds-ratio term; TRL calls it beta). 0.1 as in the ORPO paper's examples.
ORPO_BETA = 0.1
# The SFT warm-up's share of the step budget in the SFT -> DPO route (DPO gets the rest).
SFT_SHARE = 1 / 3


def stage_steps(stage: str, profile) -> int:
    """Optimizer steps of one alignment stage; every route spends the profile's `train_steps` in total.

    SFT -> DPO: the SFT warm-up gets a third and DPO the rest; ORPO (one stage) gets all of it. So the
    two routes cost the same number of optimizer steps. A short warm-up also leaves DPO room to improve:
    on this format task a full-budget SFT alone already passes the judge on nearly every prompt (measured
    in the Lab-1.7 README)."""
    sft = max(1, round(profile.train_steps * SFT_SHARE))
    budget = {"sft": sft, "dpo": max(1, profile.train_steps - sft), "orpo": profile.train_steps}
    if stage not in budget:
        raise ValueError(f"stage must be one of {', '.join(budget)}, got {stage!r}")
    return budget[stage]


# ----------------------------------------------------------------------------------------------
# The rule-based judge
# ----------------------------------------------------------------------------------------------
def judge(kind: str, reply: str) -> bool:
    """True when `reply` follows the format its prompt asked for.

    json:   the whole reply is one JSON object with exactly the key "answer" (no prose, no code fence)
    brief:  1 to MAX_BRIEF_WORDS words
    prefix: the reply begins with 'Answer:' followed by something
    """
    text = reply.strip()
    if kind == "json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return False
        return isinstance(value, dict) and set(value) == {"answer"}
    if kind == "brief":
        return 1 <= len(text.split()) <= MAX_BRIEF_WORDS
    if kind == "prefix":
        return text.startswith(REQUIRED_PREFIX) and bool(text[len(REQUIRED_PREFIX):].strip())
    raise ValueError(f"unknown preference kind {kind!r}; expected one of {', '.join(KINDS)}")


def judge_scores(kinds: list[str], replies: list[str]) -> dict[str, Any]:
    """Pass rate overall and per kind, plus the per-prompt verdicts (for win rates and error analysis)."""
    if len(kinds) != len(replies) or not replies:
        raise ValueError(f"need equal, non-empty lists; got {len(kinds)} kinds and {len(replies)} replies")
    passed = [judge(kind, reply) for kind, reply in zip(kinds, replies)]
    scores: dict[str, Any] = {"n": len(passed), "judge_score": sum(passed) / len(passed)}
    for kind in KINDS:
        verdicts = [p for k, p in zip(kinds, passed) if k == kind]
        if verdicts:
            scores[f"judge_{kind}"] = sum(verdicts) / len(verdicts)
    scores["passed"] = passed
    return scores


def win_rate(passed_a: list[bool], passed_b: list[bool]) -> dict[str, float]:
    """Pairwise comparison of two models on the same prompts, as the judge sees them.

    A wins a prompt when its reply passes and B's fails; both pass or both fail is a tie.
    win_rate = (wins + ties / 2) / n, so 0.5 means "no better than B"."""
    if len(passed_a) != len(passed_b) or not passed_a:
        raise ValueError(f"need equal, non-empty lists; got {len(passed_a)} and {len(passed_b)}")
    wins = sum(a and not b for a, b in zip(passed_a, passed_b))
    losses = sum(b and not a for a, b in zip(passed_a, passed_b))
    ties = len(passed_a) - wins - losses
    return {"wins": wins, "losses": losses, "ties": ties, "win_rate": (wins + ties / 2) / len(passed_a)}


# ----------------------------------------------------------------------------------------------
# Data in TRL's formats
# ----------------------------------------------------------------------------------------------
def preference_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """The prompt of one preference row as chat messages: the format rule in the system turn."""
    return [{"role": "system", "content": row["system"]}, {"role": "user", "content": row["prompt"]}]


def preference_pairs(split: str = "train", limit: int | None = None):
    """TRL's conversational preference format: prompt (messages), chosen and rejected (assistant turns).
    DPOTrainer and ORPOTrainer read it as is."""
    from .data import load_course_dataset

    dataset = load_course_dataset(PREFERENCE_DATASET, split, limit=limit)

    def to_pair(row: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": preference_messages(row),
                "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}]}

    return dataset.map(to_pair, remove_columns=dataset.column_names)


def chosen_sft_set(split: str = "train", limit: int | None = None):
    """The SFT baseline's data: the same prompts with only the chosen reply (prompt-completion format)."""
    from .data import load_course_dataset

    dataset = load_course_dataset(PREFERENCE_DATASET, split, limit=limit)

    def to_completion(row: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": preference_messages(row), "completion": [{"role": "assistant", "content": row["chosen"]}]}

    return dataset.map(to_completion, remove_columns=dataset.column_names)


# ----------------------------------------------------------------------------------------------
# DPO from scratch (to check TRL's) and sequence log-probabilities
# ----------------------------------------------------------------------------------------------
def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta: float):
    """The DPO loss of Rafailov et al. (2023), written out: returns (mean loss, chosen rewards, rejected rewards).

    Implicit reward r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)); the loss is
    -log sigmoid(r(x, y_chosen) - r(x, y_rejected)), averaged over pairs."""
    import torch.nn.functional as F

    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()


def completion_logps(model, input_ids, attention_mask, completion_mask):
    """Sum of log pi(token | prefix) over the completion tokens of each row: log pi(y | x).

    Logits at position t predict token t+1, hence the shift; prompt and padding tokens are masked out."""
    import torch

    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1].float()
    targets = input_ids[:, 1:]
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * completion_mask[:, 1:]).sum(dim=1)


def reply_logps(model, tokenizer, conversations: list[list[dict[str, str]]], replies: list[str],
                batch_size: int = 16):
    """log pi(reply | prompt) for given (prompt, reply) pairs, e.g. a model's own generations.

    The reply is followed by the chat template's end-of-turn token, as a generated reply is."""
    import torch

    end = tokenizer.eos_token
    values = []
    previous_side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        for start in range(0, len(replies), batch_size):
            prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                       for c in conversations[start:start + batch_size]]
            texts = [p + r + end for p, r in zip(prompts, replies[start:start + batch_size])]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            prompt_lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
            positions = torch.arange(batch["input_ids"].shape[1], device=model.device).unsqueeze(0)
            mask = (positions >= torch.tensor(prompt_lengths, device=model.device).unsqueeze(1)).long()
            mask = mask * batch["attention_mask"]
            with torch.inference_mode():
                values.append(completion_logps(model, batch["input_ids"], batch["attention_mask"], mask))
    finally:
        tokenizer.padding_side = previous_side
    return torch.cat(values)


def dpo_batch_logps(model, batch):
    """(policy, reference) log pi(y|x) for every row of a DPOTrainer batch: chosen rows first, then
    rejected. The reference is the same model with its LoRA adapter disabled, as TRL computes it."""
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    policy = completion_logps(model, *args)
    with model.disable_adapter():
        reference = completion_logps(model, *args)
    return policy, reference


def orpo_batch_terms(model, batch):
    """The three inputs of `orpo_loss` from one ORPOTrainer batch: the NLL of the chosen sequences over
    every non-padding token (TRL includes the prompt), and the *mean* token log-prob of the chosen and
    of the rejected reply (labels != -100). ORPO uses the mean so that a long rejected reply is not
    penalised just for being long; DPO uses the sum."""
    means = []
    for side in ("chosen", "rejected"):
        reply = (batch[f"{side}_labels"] != -100).long()
        total = completion_logps(model, batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"], reply)
        means.append(total / reply[:, 1:].sum(dim=1))
    ids, mask = batch["chosen_input_ids"], batch["chosen_attention_mask"]
    chosen_nll = -completion_logps(model, ids, mask, mask).sum() / mask[:, 1:].sum()
    return chosen_nll, means[0], means[1]


def log1mexp(x):
    """log(1 - exp(x)) for x < 0, stable at both ends (Maechler 2012: switch at -log 2)."""
    import torch

    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(chosen_nll, chosen_mean_logps, rejected_mean_logps, lam: float):
    """The ORPO loss of Hong et al. (2024), written out: returns (loss, mean log odds ratio).

    odds(y|x) = P / (1 - P) with P = exp(mean token log-prob of y). The loss is the SFT loss on the chosen
    reply plus lam * -log sigmoid(log odds(y_chosen) - log odds(y_rejected)): no reference model at all."""
    import torch.nn.functional as F

    log_odds = (chosen_mean_logps - rejected_mean_logps) - (
        log1mexp(chosen_mean_logps) - log1mexp(rejected_mean_logps))
    return chosen_nll - lam * F.logsigmoid(log_odds).mean(), log_odds.mean().detach()


def kl_to_reference(policy_logps, reference_logps) -> float:
    """Monte-Carlo estimate of KL(policy || reference) per reply: mean of log pi - log pi_ref over
    replies the policy generated itself. With greedy replies it is a proxy, not an unbiased estimate."""
    return float((policy_logps - reference_logps).mean())


# ----------------------------------------------------------------------------------------------
# TRL configs and trainers with course defaults
# ----------------------------------------------------------------------------------------------
def _trl_defaults(profile, output_dir: str | Path, beta: float, overrides: dict[str, Any]) -> dict[str, Any]:
    """The course's TRL defaults (common_utils.train) with this method's beta; no mid-run checkpoints."""
    from .train import course_trl_defaults

    return course_trl_defaults(profile, output_dir, **{"save_strategy": "no", "beta": beta, **overrides})


def course_dpo_config(profile, output_dir: str | Path, **overrides: Any):
    """DPOConfig with sizes from the profile (batch, lr, max_length), DPO's share of the step budget
    (stage_steps) and beta = DPO_BETA."""
    from trl import DPOConfig

    overrides = {"max_steps": stage_steps("dpo", profile), **overrides}
    return DPOConfig(**_trl_defaults(profile, output_dir, DPO_BETA, overrides))


def course_orpo_config(profile, output_dir: str | Path, **overrides: Any):
    """ORPOConfig (trl.experimental.orpo) with the same sizes as course_dpo_config, beta = ORPO_BETA."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.orpo import ORPOConfig

    return ORPOConfig(**_trl_defaults(profile, output_dir, ORPO_BETA, overrides))


def make_dpo_trainer(model, tokenizer, train_dataset, config, peft_config=None, ref_model=None):
    """TRL's DPOTrainer. Given a plain model and a peft_config, TRL adds a fresh LoRA and uses the model
    with the adapter disabled as the reference: no second copy of the weights in memory. (Given a model
    that is already a PeftModel, TRL instead copies its adapter into a frozen "ref" adapter.) A `ref_model`
    given explicitly is used instead: a second copy of the weights, as full fine-tuning needs.)"""
    from trl import DPOTrainer

    return DPOTrainer(model=model, ref_model=ref_model, args=config, train_dataset=train_dataset,
                      processing_class=tokenizer, peft_config=peft_config)


def make_orpo_trainer(model, tokenizer, train_dataset, config, peft_config=None):
    """TRL's ORPOTrainer (trl.experimental.orpo): no reference model at all."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.orpo import ORPOTrainer

    return ORPOTrainer(model=model, args=config, train_dataset=train_dataset, processing_class=tokenizer,
                       peft_config=peft_config)


# ----------------------------------------------------------------------------------------------
# The lab recipe: SFT baseline -> DPO on top, each saved, each rebuildable
# ----------------------------------------------------------------------------------------------
@dataclass
class AlignRun:
    model: Any
    tokenizer: Any
    trainer: Any
    seconds: float
    peak: Any  # monitor.PeakMemory
    adapter_dir: Path


def load_sft_policy(profile, sft_adapter: str | Path):
    """The SFT baseline as a plain model: base weights with the SFT LoRA merged in.

    DPO starts from this model and uses it (adapter disabled) as its reference, as in the DPO paper."""
    from peft import PeftModel

    from .models import load_causal_lm

    base, tokenizer = load_causal_lm(profile.model)
    merged = PeftModel.from_pretrained(base, str(sft_adapter)).merge_and_unload()
    merged.config.use_cache = True
    return merged, tokenizer


def train_sft_baseline(profile, run_dir: str | Path) -> AlignRun:
    """SFT on the chosen replies with LoRA for stage_steps("sft") steps; the adapter goes to `run_dir/adapter`."""
    from .artifacts import save_pretrained_atomic
    from .models import load_causal_lm
    from .monitor import Timer, track_peak_memory
    from .peft_methods import apply_peft
    from .runtime import seed_everything
    from .train import course_sft_config, make_sft_trainer, run_sft

    run_dir = Path(run_dir)
    seed_everything(profile.seed)
    model, tokenizer = load_causal_lm(profile.model)
    model = apply_peft(model, "lora", profile)
    config = course_sft_config(profile, run_dir / "checkpoints", max_steps=stage_steps("sft", profile))
    trainer = make_sft_trainer(model, tokenizer, chosen_sft_set(), config)
    with track_peak_memory() as peak, Timer() as timer:
        run_sft(trainer)
    adapter_dir = save_pretrained_atomic(run_dir / "adapter", trainer.model, tokenizer)
    return AlignRun(trainer.model, tokenizer, trainer, timer.seconds, peak, adapter_dir)


def train_preference(method: str, profile, run_dir: str | Path, start_adapter: str | Path | None = None,
                     **config_overrides: Any) -> AlignRun:
    """DPO or ORPO with a fresh LoRA; the adapter goes to `run_dir/adapter`.

    start_adapter: an SFT adapter to merge first (DPO's usual start and reference); None = the base model."""
    from .artifacts import save_pretrained_atomic
    from .models import load_causal_lm
    from .monitor import Timer, track_peak_memory
    from .peft_methods import make_peft_config
    from .runtime import seed_everything

    if method not in ("dpo", "orpo"):
        raise ValueError(f"method must be 'dpo' or 'orpo', got {method!r}")
    run_dir = Path(run_dir)
    seed_everything(profile.seed)
    if start_adapter is not None:
        model, tokenizer = load_sft_policy(profile, start_adapter)
    else:
        model, tokenizer = load_causal_lm(profile.model)
    lora = make_peft_config("lora", profile)
    if method == "dpo":
        trainer = make_dpo_trainer(model, tokenizer, preference_pairs(),
                                   course_dpo_config(profile, run_dir / "checkpoints", **config_overrides), lora)
    else:
        trainer = make_orpo_trainer(model, tokenizer, preference_pairs(),
                                    course_orpo_config(profile, run_dir / "checkpoints", **config_overrides), lora)
    with track_peak_memory() as peak, Timer() as timer:
        trainer.train()
    trainer.model.config.use_cache = True
    trainer.model.eval()
    adapter_dir = save_pretrained_atomic(run_dir / "adapter", trainer.model, tokenizer)
    return AlignRun(trainer.model, tokenizer, trainer, timer.seconds, peak, adapter_dir)


def preference_step_cost(method: str, profile, steps: int = 2, reference_copy: bool = False) -> dict[str, Any]:
    """What one preference method costs per step: seconds per optimizer step (median after the first,
    which pays one-off warm-up) and memory from before the model is loaded to the end of training.

    method 'dpo' with reference_copy=False uses TRL's LoRA shortcut (reference = adapter disabled);
    reference_copy=True hands DPOTrainer a second copy of the weights, as full fine-tuning needs;
    'orpo' has no reference at all. Run each in a fresh process (the lab's measure_step_cost.py), so
    the peak belongs to one method only."""
    import statistics
    import tempfile
    import time

    from transformers import TrainerCallback

    from .models import load_causal_lm
    from .monitor import track_peak_memory
    from .peft_methods import make_peft_config
    from .runtime import seed_everything

    if method not in ("dpo", "orpo") or (reference_copy and method != "dpo"):
        raise ValueError(f"expected method 'dpo' (optionally with reference_copy) or 'orpo', got {method!r}"
                         f"{' with reference_copy' if reference_copy else ''}")

    class StepClock(TrainerCallback):
        """Timestamps: when training starts, then the end of every optimizer step."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.times = [time.perf_counter()]

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    seed_everything(profile.seed)
    clock = StepClock()
    lora = make_peft_config("lora", profile)
    with track_peak_memory() as peak, tempfile.TemporaryDirectory(prefix=f"step-cost-{method}-") as out:
        model, tokenizer = load_causal_lm(profile.model)
        data = preference_pairs("train", limit=steps * profile.batch_size)
        if method == "dpo":
            reference = load_causal_lm(profile.model)[0] if reference_copy else None
            trainer = make_dpo_trainer(model, tokenizer, data, course_dpo_config(profile, out, max_steps=steps), lora,
                                       ref_model=reference)
        else:
            trainer = make_orpo_trainer(model, tokenizer, data, course_orpo_config(profile, out, max_steps=steps), lora)
        trainer.add_callback(clock)
        trainer.train()
    durations = [b - a for a, b in zip(clock.times, clock.times[1:])]
    return {"method": method + ("+reference copy" if reference_copy else ""), "steps": steps,
            "seconds_per_step": statistics.median(durations[1:] or durations),
            "rss_increase_mb": peak.rss_increase_mb, "cuda_peak_mb": peak.cuda_peak_mb}


def ensure_alignment_adapter(stage: str, profile, run_dir: str | Path, start_adapter: str | Path | None = None,
                             **config_overrides: Any) -> Path:
    """`run_dir/adapter` if an earlier stage saved it; otherwise say so and rebuild it with the same
    recipe ('sft' -> train_sft_baseline, 'dpo'/'orpo' -> train_preference), so any stage runs on its own."""
    adapter_dir = Path(run_dir) / "adapter"
    if (adapter_dir / "adapter_config.json").exists():
        return adapter_dir
    print(f"{adapter_dir} not found: rebuilding the {stage.upper()} adapter with the same recipe as the lab ...")
    if stage == "sft":
        train_sft_baseline(profile, run_dir)
    else:
        train_preference(stage, profile, run_dir, start_adapter=start_adapter, **config_overrides)
    return adapter_dir

