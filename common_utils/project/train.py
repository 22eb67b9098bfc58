"""Chat formatting and the LoRA recipe of a project: the course's SFT wrappers, composed once.

02-Train builds the trainer (to look at a batch first), trains and saves; 03 and 04 call
`ensure_project_adapter`, which reuses the saved adapter or rebuilds it with the same two calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common_utils.project.definition import TaskDefinition


def project_train_set(definition: TaskDefinition, rows: list[dict[str, Any]]):
    """The rows in TRL's conversational prompt-completion format (loss on the label word and EOS only)."""
    from common_utils.tasks.tickets import label_prompt_completion

    from datasets import Dataset

    return Dataset.from_list([label_prompt_completion(row[definition.input_field], definition.instruction_text,
                                                      row[definition.output_field]) for row in rows])


def project_trainer(definition: TaskDefinition, sizes, run_dir: str | Path, rows: list[dict[str, Any]]):
    """The course model with LoRA (rank and alpha from the lab's sizes) in an SFTTrainer, not yet trained."""
    from common_utils.core.models import load_causal_lm
    from common_utils.core.runtime import seed_everything
    from common_utils.peft.methods import apply_peft
    from common_utils.training.sft import course_sft_config, make_sft_trainer

    seed_everything(sizes.seed)
    model, tokenizer = load_causal_lm(sizes.model)
    model = apply_peft(model, "lora", sizes)
    config = course_sft_config(sizes, Path(run_dir) / "checkpoints", save_strategy="no")
    return make_sft_trainer(model, tokenizer, project_train_set(definition, rows), config)


def train_project_adapter(trainer, run_dir: str | Path):
    """Train (the course's run_sft), then save the adapter and tokenizer to `run_dir/adapter` atomically.
    Returns the course's FinetuneRun (model, losses, seconds, peak memory, adapter folder)."""
    from common_utils.core.artifacts import save_pretrained_atomic
    from common_utils.core.monitor import Timer, track_peak_memory
    from common_utils.training.sft import FinetuneRun, loss_history, run_sft

    with track_peak_memory() as peak, Timer() as timer:
        run_sft(trainer, resume=False)
    adapter_dir = save_pretrained_atomic(Path(run_dir) / "adapter", trainer.model, trainer.processing_class)
    return FinetuneRun(trainer.model, trainer.processing_class, trainer, loss_history(trainer), timer.seconds,
                       peak, adapter_dir)


def ensure_project_adapter(definition: TaskDefinition, sizes, run_dir: str | Path,
                           rows: list[dict[str, Any]]) -> Path:
    """`run_dir/adapter` if 02-Train saved it, else rebuilt with 02's recipe. Returns the adapter folder."""
    from common_utils.core.artifacts import ensure

    adapter_dir = Path(run_dir) / "adapter"
    ensure(adapter_dir / "adapter_config.json",
           lambda: train_project_adapter(project_trainer(definition, sizes, run_dir, rows), run_dir),
           made_by=f"02-Train: project_trainer + train_project_adapter, {sizes.train_steps} LoRA steps")
    return adapter_dir
