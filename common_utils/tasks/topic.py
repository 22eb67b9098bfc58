"""Topic classification as generation with a causal LM: the task of Lab-1.1 (PEFT with Hugging Face).

The chat model reads one sentence and answers its topic as a single word; accuracy compares the
first word of the reply with the label. Lab-1.1 teaches the plain Hugging Face calls (datasets,
peft, trl, transformers) in its cells. This module keeps only what several of its stages share: the
prompt, the scoring, and the one-call recipe that rebuilds the adapter when a later stage runs alone.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from common_utils.core.artifacts import ensure
from common_utils.data import Schema, register_dataset

TOPIC_DATASET = "topic_classification"


def _check_classification(row: dict) -> str | None:
    return None if row["label"] >= 0 else "'label' must be >= 0"


register_dataset(TOPIC_DATASET, Schema({"id": str, "text": str, "label": int, "label_text": str},
                                       _check_classification))
TOPIC_SPLITS = ("train", "valid", "test")


def hf_model_source(key: str) -> str:
    """What to pass to `from_pretrained` for a course registry key: the embedded model's folder, or a
    hub model's local snapshot (falling back, with a message, to the embedded model when offline)."""
    from common_utils.core.models import resolve_model

    return str(resolve_model(key)[1])


def topic_data_files() -> dict[str, str]:
    """The topic dataset's JSONL files by split, for `datasets.load_dataset("json", data_files=...)`.
    Raises with the rebuild command when a split is missing."""
    from common_utils.data import datasets_dir

    files = {split: datasets_dir() / TOPIC_DATASET / f"{split}.jsonl" for split in TOPIC_SPLITS}
    missing = [str(path) for path in files.values() if not path.exists()]
    if missing:
        raise FileNotFoundError(f"missing {missing}. Rebuild the course data: `python datasets/build_datasets.py`.")
    return {split: str(path) for split, path in files.items()}


def topic_labels(dataset) -> list[str]:
    """Label names ordered by label id, read from a split that has `label` and `label_text` columns."""
    pairs = dict(zip(dataset["label"], dataset["label_text"]))
    if sorted(pairs) != list(range(len(pairs))):
        raise ValueError(f"label ids should be 0..{len(pairs) - 1}, got {sorted(pairs)}")
    return [pairs[i] for i in range(len(pairs))]


def topic_messages(text: str, labels: list[str], answer: str | None = None) -> list[dict[str, str]]:
    """Chat messages for one sentence; the same template for training, evaluation and deployment.

    The instruction is the system turn: it replaces the chat template's long default system prompt,
    which keeps an example near 50 tokens, and sequence length is most of what a CPU step costs."""
    messages = [{"role": "system", "content": f"Classify the topic of the text. Answer with one word: {', '.join(labels)}."},
                {"role": "user", "content": text}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def topic_prompt_completion(row: dict[str, Any], labels: list[str]) -> dict[str, list[dict[str, str]]]:
    """TRL's conversational prompt-completion format: the loss falls on the label (and EOS) only."""
    messages = topic_messages(row["text"], labels, answer=row["label_text"])
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def first_word(reply: str) -> str:
    """The reply's first word, lower-cased, punctuation stripped: what the model 'answered'."""
    words = reply.strip().split()
    return words[0].strip(string.punctuation).lower() if words else ""


def topic_accuracy(replies: list[str], references: list[str]) -> float:
    """Share of replies whose first word is the reference label."""
    if len(replies) != len(references) or not replies:
        raise ValueError(f"need equal, non-empty lists; got {len(replies)} replies, {len(references)} references")
    return sum(first_word(r) == ref.lower() for r, ref in zip(replies, references)) / len(replies)


def topic_lora_config(sizes):
    """The LoRA settings Lab-1.1 trains with: rank and alpha from the lab's sizes, every linear layer."""
    from peft import LoraConfig

    return LoraConfig(r=sizes.lora_r, lora_alpha=sizes.lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def topic_sft_config(sizes, output_dir: str | Path):
    """SFTConfig of Lab-1.1: steps, batch, lr and length from the lab's sizes, no checkpoints mid-run
    (the run is short), bf16 only on GPUs that support it (trl's default bf16=True fails on CPU)."""
    from common_utils.core.runtime import bf16_supported

    from trl import SFTConfig

    return SFTConfig(output_dir=str(output_dir), max_steps=sizes.train_steps,
                     per_device_train_batch_size=sizes.batch_size, learning_rate=sizes.learning_rate,
                     max_length=sizes.max_length, logging_steps=1, save_strategy="no", report_to="none",
                     seed=sizes.seed, activation_checkpointing=False, bf16=bf16_supported())


def train_topic_lora(sizes, run_dir: str | Path) -> Path:
    """03-Apply_LoRA_and_Train in one call: LoRA SFT on the topic train split, adapter and tokenizer
    saved to `run_dir/adapter` atomically. Returns the adapter folder."""
    from common_utils.core.artifacts import save_pretrained_atomic
    from common_utils.core.models import load_causal_lm
    from common_utils.core.runtime import seed_everything

    from datasets import load_dataset
    from peft import get_peft_model
    from trl import SFTTrainer

    seed_everything(sizes.seed)
    model, tokenizer = load_causal_lm(sizes.model)
    train = load_dataset("json", data_files=topic_data_files())["train"]
    labels = topic_labels(train)
    train = train.map(topic_prompt_completion, fn_kwargs={"labels": labels}, remove_columns=train.column_names)
    model = get_peft_model(model, topic_lora_config(sizes))
    trainer = SFTTrainer(model=model, args=topic_sft_config(sizes, Path(run_dir) / "checkpoints"),
                         train_dataset=train, processing_class=tokenizer)
    trainer.train()
    return save_pretrained_atomic(Path(run_dir) / "adapter", trainer.model, tokenizer)


def ensure_topic_adapter(sizes, run_dir: str | Path) -> Path:
    """`run_dir/adapter` if 03 saved it; otherwise `ensure` says so and rebuilds it with the same
    recipe (`train_topic_lora`), so 04 and 05 run on their own. Returns the adapter folder."""
    adapter_dir = Path(run_dir) / "adapter"
    # save_pretrained_atomic swaps the whole folder in at once: its config proves the save finished
    ensure(adapter_dir / "adapter_config.json", lambda: train_topic_lora(sizes, run_dir),
           made_by=f"03-Apply_LoRA_and_Train: train_topic_lora, {sizes.train_steps} steps")
    return adapter_dir
