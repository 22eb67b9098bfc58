"""Preference training (DPO, ORPO) with TRL: sequence log-probabilities, configs and trainers with
course defaults, and the SFT -> DPO / ORPO recipes later stages call to rebuild a missing adapter.

Every recipe takes the lab's `sizes` (common_utils.lab_sizes(): batch, lr, max_length, LoRA rank and
the step budget sft_steps / dpo_steps / orpo_steps from the lab's lab.yaml). The task (data + rule-based
judge) is common_utils.tasks.preference; the losses themselves are taught in the notebooks
Lab-1.7/03-DPO_Training (`dpo_loss`) and Lab-1.8/01-Setup (`log1mexp`, `orpo_loss`) and exported from
their `#@save preference_losses` cells to common_utils.reference.preference_losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common_utils.tasks.preference import PREFERENCE_DATASET, chosen_sft_set, preference_pairs

# DPO's beta (KL strength). 0.1 is the DPO paper's default; the smoke calibration is in the lab README.
DPO_BETA = 0.1
# ORPO's lambda (weight of the odds-ratio term; TRL calls it beta). 0.1 as in the ORPO paper's examples.
ORPO_BETA = 0.1


def alignment_dataset(sizes) -> str:
    """The preference dataset a lab trains on: `sizes.dataset` from its lab.yaml (Lab-1.7:
    preference_brevity), else preference_format. It lives in the sizes so that an adapter rebuilt by a
    later stage uses the same data, and two labs whose sizes compare equal trained on the same data."""
    return sizes.values.get("dataset", PREFERENCE_DATASET)


# ----------------------------------------------------------------------------------------------
# Sequence log-probabilities (the DPO/ORPO losses themselves are taught in Lab-1.7/03 and Lab-1.8/01)
def completion_logps(model, input_ids, attention_mask, completion_mask):
    """Sum of log pi(token | prefix) over the completion tokens of each row: log pi(y | x).

    Logits at position t predict token t+1, hence the shift; prompt and padding tokens are masked out."""
    import torch

    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1].float()
    targets = input_ids[:, 1:]
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * completion_mask[:, 1:]).sum(dim=1)


def reply_logps(model, tokenizer, conversations: list[list[dict[str, str]]], replies: list[str],
                batch_size: int = 16, mean: bool = False):
    """log pi(reply | prompt) for given (prompt, reply) pairs, e.g. a model's own generations; with
    mean=True the mean token log-prob of each reply instead of the sum (ORPO's P(y|x) = exp(mean)).

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
                total = completion_logps(model, batch["input_ids"], batch["attention_mask"], mask)
            values.append(total / mask[:, 1:].sum(dim=1) if mean else total)
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


def heldout_log_odds_term(model, tokenizer, rows, batch_size: int = 16) -> float:
    """ORPO's preference term on held-out pairs, mean of log sigmoid(log odds(chosen) - log odds(rejected))
    with P(y|x) = exp(mean token log-prob), as `orpo_loss` computes it (at most 0; higher = chosen
    gaining on rejected).

    Measured on the same fixed pairs before and after training, so the difference is the training's
    effect alone; comparing the logged term of early and late training batches also moves with the
    batches (Lab-1.8 measured -0.735 -> -0.655 at learning rate 0)."""
    from common_utils.reference.preference_losses import log1mexp
    from common_utils.tasks.preference import preference_messages

    import torch.nn.functional as F

    conversations = [preference_messages(row) for row in rows]
    log_odds = []
    for side in ("chosen", "rejected"):
        mean_logps = reply_logps(model, tokenizer, conversations, [row[side] for row in rows], batch_size, mean=True)
        log_odds.append(mean_logps - log1mexp(mean_logps))
    return float(F.logsigmoid(log_odds[0] - log_odds[1]).mean())


def kl_to_reference(policy_logps, reference_logps) -> float:
    """Monte-Carlo estimate of KL(policy || reference) per reply: mean of log pi - log pi_ref over
    replies the policy generated itself. With greedy replies it is a proxy, not an unbiased estimate."""
    return float((policy_logps - reference_logps).mean())


# ----------------------------------------------------------------------------------------------
# TRL configs and trainers with course defaults
# ----------------------------------------------------------------------------------------------
def _trl_defaults(sizes, output_dir: str | Path, beta: float, overrides: dict[str, Any]) -> dict[str, Any]:
    """The course's TRL defaults (common_utils.training.sft) with this method's beta; no mid-run checkpoints."""
    from common_utils.training.sft import course_trl_defaults

    return course_trl_defaults(sizes, output_dir, **{"save_strategy": "no", "beta": beta, **overrides})


def course_dpo_config(sizes, output_dir: str | Path, **overrides: Any):
    """DPOConfig with the lab's sizes (batch, lr, max_length), its DPO step budget (`sizes.dpo_steps`),
    beta = DPO_BETA and TRL's `loss_type` list from `sizes.dpo_loss` when the lab declares one (Lab-1.7:
    [sigmoid, sft], DPO plus the NLL of the chosen replies; without the NLL term DPO at this lr emptied
    the replies, README). Explicit overrides win."""
    from trl import DPOConfig

    if "max_steps" not in overrides:  # read lazily: a caller that sets the steps needs no dpo_steps
        overrides["max_steps"] = sizes.dpo_steps
    if "dpo_loss" in sizes.values:
        overrides.setdefault("loss_type", list(sizes.values["dpo_loss"]))
    return DPOConfig(**_trl_defaults(sizes, output_dir, DPO_BETA, overrides))


def course_orpo_config(sizes, output_dir: str | Path, **overrides: Any):
    """ORPOConfig (trl.experimental.orpo) with the same sizes as course_dpo_config, the ORPO step budget
    (`sizes.orpo_steps`: SFT + DPO's steps in one stage) and beta = ORPO_BETA."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.orpo import ORPOConfig

    if "max_steps" not in overrides:
        overrides["max_steps"] = sizes.orpo_steps
    return ORPOConfig(**_trl_defaults(sizes, output_dir, ORPO_BETA, overrides))


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


def load_sft_policy(sizes, sft_adapter: str | Path):
    """The SFT baseline as a plain model: base weights with the SFT LoRA merged in.

    DPO starts from this model and uses it (adapter disabled) as its reference, as in the DPO paper."""
    from common_utils.core.models import load_causal_lm

    from peft import PeftModel

    base, tokenizer = load_causal_lm(sizes.model)
    merged = PeftModel.from_pretrained(base, str(sft_adapter)).merge_and_unload()
    merged.config.use_cache = True
    return merged, tokenizer


def train_sft_baseline(sizes, run_dir: str | Path) -> AlignRun:
    """SFT on the chosen replies of `alignment_dataset(sizes)` with LoRA for the lab's sft_steps steps; the
    adapter goes to `run_dir/adapter`. The same-budget baseline of Lab-1.7/04 is this recipe with
    `sizes.with_overrides(sft_steps=sizes.train_steps)`."""
    from common_utils.core.artifacts import save_pretrained_atomic
    from common_utils.core.models import load_causal_lm
    from common_utils.core.monitor import Timer, track_peak_memory
    from common_utils.core.runtime import seed_everything
    from common_utils.peft.methods import apply_peft
    from common_utils.training.sft import course_sft_config, make_sft_trainer, run_sft

    run_dir = Path(run_dir)
    seed_everything(sizes.seed)
    model, tokenizer = load_causal_lm(sizes.model)
    model = apply_peft(model, "lora", sizes)
    config = course_sft_config(sizes, run_dir / "checkpoints", max_steps=sizes.sft_steps)
    trainer = make_sft_trainer(model, tokenizer, chosen_sft_set(dataset=alignment_dataset(sizes)), config)
    with track_peak_memory() as peak, Timer() as timer:
        run_sft(trainer)
    adapter_dir = save_pretrained_atomic(run_dir / "adapter", trainer.model, tokenizer)
    return AlignRun(trainer.model, tokenizer, trainer, timer.seconds, peak, adapter_dir)


def train_preference(method: str, sizes, run_dir: str | Path, start_adapter: str | Path | None = None,
                     **config_overrides: Any) -> AlignRun:
    """DPO or ORPO with a fresh LoRA; the adapter goes to `run_dir/adapter`.

    start_adapter: an SFT adapter to merge first (DPO's usual start and reference); None = the base model."""
    from common_utils.core.artifacts import save_pretrained_atomic
    from common_utils.core.models import load_causal_lm
    from common_utils.core.monitor import Timer, track_peak_memory
    from common_utils.core.runtime import seed_everything
    from common_utils.peft.methods import make_peft_config

    if method not in ("dpo", "orpo"):
        raise ValueError(f"method must be 'dpo' or 'orpo', got {method!r}")
    run_dir = Path(run_dir)
    seed_everything(sizes.seed)
    if start_adapter is not None:
        model, tokenizer = load_sft_policy(sizes, start_adapter)
    else:
        model, tokenizer = load_causal_lm(sizes.model)
    lora = make_peft_config("lora", sizes)
    pairs = preference_pairs(dataset=alignment_dataset(sizes))
    if method == "dpo":
        trainer = make_dpo_trainer(model, tokenizer, pairs,
                                   course_dpo_config(sizes, run_dir / "checkpoints", **config_overrides), lora)
    else:
        trainer = make_orpo_trainer(model, tokenizer, pairs,
                                    course_orpo_config(sizes, run_dir / "checkpoints", **config_overrides), lora)
    with track_peak_memory() as peak, Timer() as timer:
        trainer.train()
    trainer.model.config.use_cache = True
    trainer.model.eval()
    adapter_dir = save_pretrained_atomic(run_dir / "adapter", trainer.model, tokenizer)
    return AlignRun(trainer.model, tokenizer, trainer, timer.seconds, peak, adapter_dir)


def preference_step_cost(method: str, sizes, steps: int = 2, reference_copy: bool = False) -> dict[str, Any]:
    """What one preference method costs per step: seconds per optimizer step (median after the first,
    which pays one-off warm-up) and memory from before the model is loaded to the end of training.

    method 'dpo' with reference_copy=False uses TRL's LoRA shortcut (reference = adapter disabled);
    reference_copy=True hands DPOTrainer a second copy of the weights, as full fine-tuning needs;
    'orpo' has no reference at all. Run each in a fresh process (the lab's measure_step_cost.py), so
    the peak belongs to one method only."""
    import statistics
    import tempfile
    import time

    from common_utils.core.models import load_causal_lm
    from common_utils.core.monitor import track_peak_memory
    from common_utils.core.runtime import seed_everything
    from common_utils.peft.methods import make_peft_config

    from transformers import TrainerCallback

    if method not in ("dpo", "orpo") or (reference_copy and method != "dpo"):
        raise ValueError(f"expected method 'dpo' (optionally with reference_copy) or 'orpo', got {method!r}"
                         f"{' with reference_copy' if reference_copy else ''}")

    class StepClock(TrainerCallback):
        """Timestamps: when training starts, then the end of every optimizer step."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.times = [time.perf_counter()]

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    seed_everything(sizes.seed)
    clock = StepClock()
    lora = make_peft_config("lora", sizes)
    with track_peak_memory() as peak, tempfile.TemporaryDirectory(prefix=f"step-cost-{method}-") as out:
        model, tokenizer = load_causal_lm(sizes.model)
        data = preference_pairs("train", limit=steps * sizes.batch_size, dataset=alignment_dataset(sizes))
        if method == "dpo":
            reference = load_causal_lm(sizes.model)[0] if reference_copy else None
            trainer = make_dpo_trainer(model, tokenizer, data, course_dpo_config(sizes, out, max_steps=steps), lora,
                                       ref_model=reference)
        else:
            trainer = make_orpo_trainer(model, tokenizer, data, course_orpo_config(sizes, out, max_steps=steps), lora)
        trainer.add_callback(clock)
        trainer.train()
    durations = [b - a for a, b in zip(clock.times, clock.times[1:])]
    return {"method": method + ("+reference copy" if reference_copy else ""), "steps": steps,
            "seconds_per_step": statistics.median(durations[1:] or durations),
            "rss_increase_mb": peak.rss_increase_mb, "cuda_peak_mb": peak.cuda_peak_mb}


def ensure_alignment_adapter(stage: str, sizes, run_dir: str | Path, start_adapter: str | Path | None = None,
                             **config_overrides: Any) -> Path:
    """`run_dir/adapter` if an earlier stage saved it; otherwise `common_utils.ensure` says so and rebuilds
    it with the same recipe ('sft' -> train_sft_baseline, 'dpo'/'orpo' -> train_preference), so any stage
    runs on its own. The adapter folder is swapped in atomically, so its adapter_config.json proves it is whole."""
    from functools import partial

    from common_utils.core.artifacts import ensure

    if stage == "sft":
        build, made_by = partial(train_sft_baseline, sizes, run_dir), "train_sft_baseline"
    elif stage in ("dpo", "orpo"):
        build = partial(train_preference, stage, sizes, run_dir, start_adapter=start_adapter, **config_overrides)
        made_by = f"train_preference({stage!r})"
    else:
        raise ValueError(f"stage must be 'sft', 'dpo' or 'orpo', got {stage!r}")
    adapter_dir = Path(run_dir) / "adapter"
    ensure(adapter_dir / "adapter_config.json", build, made_by=made_by)
    return adapter_dir

