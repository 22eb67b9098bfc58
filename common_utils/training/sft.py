"""Thin wrappers over TRL's SFTTrainer with the course's defaults.

What they add over plain TRL: sizes come from the profile; CPU-friendly defaults (no gradient
checkpointing, fp32 on CPU, bf16 on capable GPUs); resumption from the last checkpoint when the run
is the same run; `use_cache` switched back on after training (TRL leaves it off); atomic saves.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_FINGERPRINT = "course_run.json"


def course_trl_defaults(profile, output_dir: str | Path, **overrides: Any) -> dict[str, Any]:
    """The course's keyword arguments for any TRL config (SFTConfig, DPOConfig, ORPOConfig): sizes from
    the profile, precision from the device, checkpoints a few times per run; overrides win."""
    from common_utils.core.runtime import bf16_supported, get_device

    device = get_device()
    steps = overrides.get("max_steps", profile.train_steps)
    defaults: dict[str, Any] = dict(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=profile.batch_size,
        learning_rate=profile.learning_rate,
        max_length=profile.max_length,
        logging_steps=1,
        save_strategy="steps",
        save_steps=max(5, steps // 3),
        save_total_limit=1,
        report_to="none",
        seed=profile.seed,
        # TRL turns activation (gradient) checkpointing on by default; at course sizes it only costs time.
        activation_checkpointing=False,
        bf16=bf16_supported(device),
        fp16=device.type == "cuda" and not bf16_supported(device),
        dataloader_num_workers=0,
        dataloader_pin_memory=device.type == "cuda",
    )
    return {**defaults, **overrides}


def course_sft_config(profile, output_dir: str | Path, **overrides: Any):
    """SFTConfig with sizes from the profile; any SFTConfig field can be overridden by keyword."""
    from trl import SFTConfig

    return SFTConfig(**course_trl_defaults(profile, output_dir, **overrides))


def data_digest(dataset) -> str:
    """Hash of the training rows as the trainer sees them (token ids once tokenized), so that a run on
    other data of the same size is not taken for the same run (Lab-1.7 once resumed a checkpoint trained
    on another preference dataset with the same 240 rows)."""
    column = "input_ids" if "input_ids" in dataset.column_names else dataset.column_names[0]
    return stable_hash({column: dataset[column]})


def _fingerprint(config, peft_config, data: str, model) -> str:
    """Hash of what makes two runs the same run: checkpoints of another run must not be resumed.
    `data` is `data_digest` of the training set.

    Stable across processes: peft stores target modules as a set, whose order changes between
    interpreter runs, so sets are sorted before hashing."""
    from common_utils.peft.methods import is_quantized

    keys = ["max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
            "max_length", "seed", "lr_scheduler_type"]
    payload: dict[str, Any] = {k: str(getattr(config, k, None)) for k in keys}
    configs = peft_config.items() if isinstance(peft_config, dict) else [("default", peft_config)]
    payload["peft"] = {name: cfg.to_dict() if hasattr(cfg, "to_dict") else str(cfg) for name, cfg in configs}
    payload["data"] = data
    payload["model"] = getattr(model, "course_model_key", type(model).__name__)
    payload["quantized"] = is_quantized(model)
    return stable_hash(payload)


def stable_hash(payload: dict[str, Any]) -> str:
    """Short hash of a settings dict that is the same in every process: keys sorted, sets sorted (their
    iteration order changes with PYTHONHASHSEED), anything else not JSON-native as its str()."""

    def jsonable(value: Any) -> Any:
        return sorted(map(str, value)) if isinstance(value, (set, frozenset)) else str(value)

    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=jsonable).encode()).hexdigest()[:16]


def _resume_point(output_dir: Path, fingerprint: str) -> str | None:
    """Last checkpoint of the *same* run, or None. A different run's checkpoints are removed."""
    from transformers.trainer_utils import get_last_checkpoint

    if not output_dir.exists():
        return None
    marker = output_dir / RUN_FINGERPRINT
    same_run = marker.exists() and json.loads(marker.read_text()).get("fingerprint") == fingerprint
    last = get_last_checkpoint(str(output_dir))
    if last and same_run:
        print(f"Resuming from {last} (same run settings).")
        return last
    if last:
        print(f"Settings changed since {last} was saved: starting a fresh run.")
        for checkpoint in output_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint)
    return None


def make_sft_trainer(model, tokenizer, train_dataset, config):
    """TRL's SFTTrainer, built but not yet trained, so a notebook can inspect a batch first."""
    from trl import SFTTrainer

    return SFTTrainer(model=model, args=config, train_dataset=train_dataset, processing_class=tokenizer)


def run_sft(trainer, resume: bool = True):
    """Train; resume from the last checkpoint of an interrupted run with the same settings.

    Returns the trainer (its `.model` is the trained model, `.state.log_history` the losses).
    """
    output_dir = Path(trainer.args.output_dir)
    method_config = getattr(trainer.model, "peft_config", None) or getattr(trainer.model, "adapter_config", None)
    fingerprint = _fingerprint(trainer.args, method_config, data_digest(trainer.train_dataset), trainer.model)
    checkpoint = _resume_point(output_dir, fingerprint) if resume else None
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / RUN_FINGERPRINT).write_text(json.dumps({"fingerprint": fingerprint}))
    from transformers.trainer_callback import TrainerState

    saved = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json")) if checkpoint else None
    if saved is not None and saved.global_step >= trainer.args.max_steps:
        # The run already finished: Trainer.train() would take one step past max_steps, so only load it.
        trainer._load_from_checkpoint(checkpoint)
        trainer.state = saved
    else:
        trainer.train(resume_from_checkpoint=checkpoint)
    trainer.model.config.use_cache = True  # TRL disables the KV cache for training; generation needs it
    trainer.model.eval()
    return trainer


def train_sft(model, tokenizer, train_dataset, config, resume: bool = True):
    """make_sft_trainer + run_sft in one call."""
    return run_sft(make_sft_trainer(model, tokenizer, train_dataset, config), resume=resume)


def extraction_train_set(limit: int | None = None):
    """The course extraction task's train split in TRL's prompt-completion format."""
    from common_utils.data import load_course_dataset
    from common_utils.tasks.extraction import to_prompt_completion

    dataset = load_course_dataset("person_extraction", "train", limit=limit)
    return dataset.map(to_prompt_completion, remove_columns=dataset.column_names)


@dataclass
class FinetuneRun:
    model: Any
    tokenizer: Any
    trainer: Any
    history: list[tuple[int, float]]
    seconds: float
    peak: Any  # monitor.PeakMemory
    adapter_dir: Path

    def summary(self) -> str:
        """One line: steps, time, loss at both ends, memory; what a 02-Train notebook prints after training."""
        return (f"{self.trainer.args.max_steps} steps in {self.seconds:.1f} s, loss {self.history[0][1]:.3f} -> "
                f"{self.history[-1][1]:.3f}, peak RSS {self.peak.peak_rss_mb:.0f} MB "
                f"(+{self.peak.rss_increase_mb:.0f} MB while training)")

    def measured(self) -> dict[str, Any]:
        """What a 02-Train stage records in outputs/metrics.json about the run itself."""
        return {"seconds": self.seconds, "steps": self.trainer.args.max_steps,
                "learning_rate": self.trainer.args.learning_rate, "peak_rss_mb": self.peak.peak_rss_mb,
                "train_rss_increase_mb": self.peak.rss_increase_mb, "cuda_peak_mb": self.peak.cuda_peak_mb,
                "loss_first": self.history[0][1], "loss_last": self.history[-1][1]}


def finetune_extraction(method, profile, output_dir: str | Path, quantization: str | None = None,
                        max_steps: int | None = None, learning_rate: float | None = None, sft_config=None,
                        **peft_overrides: Any) -> FinetuneRun:
    """The whole recipe of a PEFT lab's 02-Train stage in one call: load the lab's model, apply the
    PEFT method, SFT on the course extraction task, save the adapter to `output_dir/adapter`.

    `method` is a registered name ("ia3"; `peft_overrides` change its config) or the config itself,
    written out in the notebook (`IA3Config(...)`, `AdapterConfig(...)`). `sft_config` is the SFTConfig
    to train with; by default `course_sft_config` with the lab's sizes and the method's learning rate
    (default_learning_rate: soft prompts need far more than LoRA). Later stages call it through
    ensure_adapter to rebuild a missing adapter, so every stage runs on its own."""
    from common_utils.core.artifacts import save_pretrained_atomic
    from common_utils.core.models import load_causal_lm
    from common_utils.core.monitor import Timer, track_peak_memory
    from common_utils.core.runtime import seed_everything
    from common_utils.peft.adapters import has_adapters, save_adapters
    from common_utils.peft.methods import apply_peft, default_learning_rate, method_of

    output_dir = Path(output_dir)
    name = method if isinstance(method, str) else method_of(method)
    if sft_config is None:
        sft_config = course_sft_config(profile, output_dir / "checkpoints", max_steps=max_steps or profile.train_steps,
                                       learning_rate=learning_rate or default_learning_rate(name, profile))
    elif max_steps is not None or learning_rate is not None:
        raise TypeError("max_steps and learning_rate are fields of sft_config: set them there")
    seed_everything(profile.seed)
    model, tokenizer = load_causal_lm(profile.model, quantization=quantization)
    model = apply_peft(model, method, profile, **peft_overrides)
    trainer = make_sft_trainer(model, tokenizer, extraction_train_set(), sft_config)
    with track_peak_memory() as peak, Timer() as timer:
        run_sft(trainer, resume=_resumable(model))
    if has_adapters(trainer.model):  # bottleneck adapters: their weights alone, not the whole model
        adapter_dir = save_adapters(output_dir / "adapter", trainer.model, tokenizer)
    else:
        adapter_dir = save_pretrained_atomic(output_dir / "adapter", trainer.model, tokenizer)
    return FinetuneRun(trainer.model, tokenizer, trainer, loss_history(trainer), timer.seconds, peak, adapter_dir)


def _resumable(model) -> bool:
    """False for prefix tuning with the MLP projection: peft checkpoints store only the MLP's output
    (the prefix itself), so the MLP cannot be restored from them and the run must start over."""
    peft_config = getattr(model, "peft_config", {}).get("default")
    return not getattr(peft_config, "prefix_projection", False)


def ensure_adapter(method: str, profile, run_dir: str | Path, **finetune_kwargs: Any) -> Path:
    """`run_dir/adapter` if an earlier stage saved it; otherwise say so and rebuild it with
    finetune_extraction, the recipe 02-Train uses, so a later stage runs on its own.

    Its adapter_config.json is written last (the folder is swapped in atomically), so its presence
    proves the save finished."""
    from common_utils.core.artifacts import ensure

    adapter_dir = Path(run_dir) / "adapter"
    steps = finetune_kwargs.get("max_steps") or profile.train_steps
    ensure(adapter_dir / "adapter_config.json", lambda: finetune_extraction(method, profile, run_dir, **finetune_kwargs),
           made_by=f"02-Train's finetune_extraction({method!r}), {steps} steps")
    return adapter_dir


def show_loss_tokens(trainer, row: int = 0) -> list[tuple[str, bool]]:
    """Decode one example of the trainer's first training batch and print it with the tokens that carry
    loss in [brackets]; returns loss_token_table's (token, carries_loss) pairs for the asserts.

    The learner sanity check Lab-01 02-Train writes out step by step: loss on the answer and its EOS only."""
    from common_utils.data import loss_token_table

    batch = next(iter(trainer.get_train_dataloader()))
    table = loss_token_table(batch["input_ids"][row], batch["labels"][row], trainer.processing_class)
    print("".join(f"[{token}]" if carries_loss else token for token, carries_loss in table))
    print(f"\n{sum(carries for _, carries in table)} of {len(table)} tokens carry loss; [..] marks them")
    return table


def eos_carries_loss(table: list[tuple[str, bool]], tokenizer) -> bool:
    """True if the end-of-turn token is among the loss tokens: without it the model never learns to stop."""
    return any(carries_loss and token == tokenizer.eos_token for token, carries_loss in table)


def config_as_code(config) -> str:
    """`config` (an SFTConfig, a peft config, an AdapterConfig) as the constructor call that builds it: the
    fields that differ from the class defaults, one per line. What a student writes in their own project.

    Training arguments derive fields from output_dir and the precision flags, so the defaults they are
    compared with are built with those three given."""
    import dataclasses
    import enum
    import warnings

    given = {k: getattr(config, k) for k in ("output_dir", "bf16", "fp16") if hasattr(config, k)}
    with warnings.catch_warnings():  # the defaults may include deprecated settings (TRL's gradient_checkpointing)
        warnings.simplefilter("ignore")
        reference = type(config)(**given)

    def code(value: Any) -> str:
        if isinstance(value, enum.Enum):
            return f"{type(value).__name__}.{value.name}"
        if isinstance(value, (set, frozenset)):
            return repr(sorted(value))
        return repr(value)

    lines = [f"    {field.name}={code(getattr(config, field.name))}," for field in dataclasses.fields(config)
             if field.init and not field.name.startswith("_")
             and (field.name in given or getattr(config, field.name) != getattr(reference, field.name))]
    return "\n".join([f"{type(config).__name__}(", *lines, ")"]) if lines else f"{type(config).__name__}()"


def loss_reduction(history: list[tuple[int, float]], window: int = 3) -> float:
    """1 - mean(last `window` losses) / mean(first `window` losses): 0.5 means the loss halved.
    Windows smooth out the step-to-step noise of small batches."""
    if len(history) < 2 * window:
        raise ValueError(f"need at least {2 * window} logged losses, got {len(history)}")
    losses = [loss for _, loss in history]
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    return 1.0 - last / first


def loss_history(trainer, key: str = "loss") -> list[tuple[int, float]]:
    """(step, value) pairs of one metric the trainer logged: the training loss by default, or e.g.
    'rewards/margins' and 'rewards/accuracies' of TRL's DPOTrainer."""
    return [(entry["step"], entry[key]) for entry in trainer.state.log_history if key in entry]
