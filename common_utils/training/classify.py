"""Encoder sequence classification: the NLU task of the BitFit, P-Tuning and P-Tuning v2 labs and of
the all-methods comparison.

The course topic_classification set (4 labels) is tokenized for the MiniLM encoder, trained with
transformers' `Trainer` (no home-made loop), and scored by accuracy on the held-out test split.
`finetune_classifier` accepts every method registered in `peft_methods` plus two baselines that are
not PEFT methods: "full" (every weight trains) and "head" (only the new classifier head trains).

Every run saves the same small artifact whatever the method: the tensors that training changed
(`trainable.safetensors`) and a run record (`run.json`). One format serves the methods peft lacks
(BitFit, bottleneck adapters) as well as peft's own, and a later stage rebuilds the model by
applying the same method to a fresh base and loading those tensors.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DATASET = "topic_classification"
TRAINABLE_FILE = "trainable.safetensors"
RUN_FILE = "run.json"
BASELINES = ("full", "head")  # not PEFT methods, but the two ends every comparison needs


# Tokens per sentence when a caller gives no max_length (the smoke sizes of the NLU labs' lab.yaml).
DEFAULT_MAX_LENGTH = 32

# Learning rate per method. Methods that train few parameters far from the output (biases, prompts)
# need much larger steps than full fine-tuning, as their papers report. Unknown methods use DEFAULT_LR.
# Prefix tuning is the exception: it trains through its reparameterization MLP (prefix_projection=True),
# which behaves like a normal network: at 1e-2 it stayed at chance (0.25) in a smoke run; 1e-3 gave 0.99,
# 3e-3 gave 1.0 (measured in PEFT_Labs/00-Compare_All_Methods).
CLASSIFY_LR: dict[str, float] = {
    "full": 1e-4,
    "head": 1e-2,
    "bitfit": 1e-2,
    "lora": 2e-3,
    "p_tuning": 1e-2,
    "p_tuning_v2": 1e-2,
    "prompt_tuning": 1e-2,
    "prefix_tuning": 3e-3,
    "ia3": 1e-2,
    "adapter": 2e-3,
}
DEFAULT_LR = 1e-3


def label_names(split: str = "train") -> list[str]:
    """Label texts ordered by label id, read from the dataset itself."""
    from common_utils.data import load_course_dataset

    rows = load_course_dataset(DATASET, split)
    names = dict(zip(rows["label"], rows["label_text"]))
    return [names[i] for i in sorted(names)]


def tokenize_split(tokenizer, split: str, max_length: int, limit: int | None = None):
    """A topic_classification split as `datasets.Dataset` with input_ids, attention_mask and labels.

    token_type_ids are dropped: BERT defaults them to zeros, and prompt methods prepend virtual
    tokens that a fixed-length token_type_ids tensor would not cover. Padding happens per batch."""
    from common_utils.data import load_course_dataset

    rows = load_course_dataset(DATASET, split, limit=limit)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                "labels": batch["label"]}

    return rows.map(encode, batched=True, remove_columns=rows.column_names)


def _freeze_all_but(model, keep) -> None:
    for name, parameter in model.named_parameters():
        parameter.requires_grad = keep(name)


def head_parameter_names(model) -> list[str]:
    """Names of the classification head's parameters (BERT: `classifier.*`; others: `score.*`)."""
    return [name for name, _ in model.named_parameters()
            if name.split(".")[0] in ("classifier", "score")]


def method_name(method: Any) -> str:
    """The name of a method given by name or as a peft config object (its peft_type, lower case)."""
    if isinstance(method, str):
        return method
    return str(getattr(method.peft_type, "value", method.peft_type)).lower()


def prepare_classifier(model, method: Any, profile=None, **overrides: Any):
    """Make `model` (an encoder with a sequence-classification head) train the way `method` says.

    "full": every weight trains. "head": only the head. Any registered PEFT method: applied through
    the factory, with peft's SEQ_CLS task type so peft keeps the new head trainable too. A peft
    config object (task_type="SEQ_CLS") is applied as is."""
    from common_utils.peft.methods import apply_peft, get_method

    if not isinstance(method, str):  # a peft config object, e.g. PromptTuningConfig for a side experiment
        from peft import get_peft_model

        return get_peft_model(model, method)
    if method == "full":
        _freeze_all_but(model, lambda name: True)
        return model
    if method == "head":
        head = set(head_parameter_names(model))
        if not head:
            raise ValueError("No classification head found (expected parameters named classifier.* or score.*). "
                             "Load the encoder with load_encoder(key, num_labels=N).")
        _freeze_all_but(model, lambda name: name in head)
        return model
    try:
        spec = get_method(method)
    except KeyError as error:
        raise KeyError(f"{error.args[0]}; or a baseline: {', '.join(BASELINES)}") from None
    if not spec.applies_itself:
        overrides = {"task_type": "SEQ_CLS", **overrides}
    return apply_peft(model, method, profile, **overrides)


def course_classify_args(profile, output_dir: str | Path, method: Any, **overrides: Any):
    """TrainingArguments with the course defaults for encoder classification; any field can be overridden."""
    from transformers import TrainingArguments

    from common_utils.core.runtime import get_device

    sizes = profile  # the lab's Sizes: train_steps, batch_size, max_length (lab.yaml)
    device = get_device()
    defaults: dict[str, Any] = dict(
        output_dir=str(output_dir),
        max_steps=sizes.train_steps,
        per_device_train_batch_size=sizes.batch_size,
        learning_rate=CLASSIFY_LR.get(method_name(method), DEFAULT_LR),
        warmup_steps=0,
        logging_steps=1,
        save_strategy="no",  # runs take seconds: a finished run is reused, an interrupted one restarts
        report_to="none",
        seed=profile.seed,
        remove_unused_columns=False,  # PeftModel.forward hides the encoder's argument names
        dataloader_num_workers=0,
        dataloader_pin_memory=device.type == "cuda",
        disable_tqdm=True,
    )
    defaults.update(overrides)
    return TrainingArguments(**defaults)


def make_classify_trainer(model, tokenizer, train_dataset, args):
    """transformers' Trainer with per-batch padding, built but not yet trained."""
    from transformers import DataCollatorWithPadding, Trainer

    return Trainer(model=model, args=args, train_dataset=train_dataset,
                   data_collator=DataCollatorWithPadding(tokenizer))


def predict_labels(model, tokenizer, texts: list[str], max_length: int | None = None,
                   batch_size: int = 64) -> list[int]:
    """Argmax label ids for raw texts, in eval mode without gradients, batch by batch."""
    import torch

    max_length = max_length or DEFAULT_MAX_LENGTH
    texts = list(texts)  # a datasets Column is not a list, and tokenizers reject it
    model.eval()
    device = next(model.parameters()).device
    predictions: list[int] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt")
            batch.pop("token_type_ids", None)
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            predictions.extend(logits.argmax(dim=-1).tolist())
    return predictions


def predict_logits(model, tokenizer, texts: list[str], max_length: int | None = None):
    """Logits for raw texts (one batch): what 'identical predictions' checks compare."""
    import torch

    max_length = max_length or DEFAULT_MAX_LENGTH
    texts = list(texts)  # a datasets Column is not a list, and tokenizers reject it
    model.eval()
    device = next(model.parameters()).device
    batch = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    batch.pop("token_type_ids", None)
    with torch.no_grad():
        return model(**{k: v.to(device) for k, v in batch.items()}).logits.cpu()


def logits_with_fixed_prompt(model, tokenizer, prompt, texts: list[str], max_length: int | None = None):
    """Logits of a plain transformers classifier with a fixed soft prompt prepended to every input.

    This is what a prompt-learning model (prompt tuning, P-Tuning) computes at inference, written out
    without peft: embed the tokens, put the `prompt` vectors (num_virtual_tokens x hidden) in front,
    extend the attention mask with ones. P-Tuning's prompt encoder is only needed to produce `prompt`
    once, so a deployment can ship these vectors instead of the encoder."""
    import torch

    max_length = max_length or DEFAULT_MAX_LENGTH
    texts = list(texts)  # a datasets Column is not a list, and tokenizers reject it
    model.eval()
    device = next(model.parameters()).device
    batch = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt").to(device)
    embeddings = model.get_input_embeddings()(batch["input_ids"])
    prompt = prompt.to(device, embeddings.dtype).unsqueeze(0).expand(len(texts), -1, -1)
    mask = torch.cat([torch.ones(len(texts), prompt.shape[1], dtype=batch["attention_mask"].dtype, device=device),
                      batch["attention_mask"]], dim=1)
    with torch.no_grad():
        return model(inputs_embeds=torch.cat([prompt, embeddings], dim=1), attention_mask=mask).logits.cpu()


def evaluate_classifier(model, tokenizer, split: str = "test", max_length: int | None = None,
                        limit: int | None = None, batch_size: int = 64) -> dict[str, float]:
    """Accuracy and mean cross-entropy on a held-out split of the course classification set.

    The loss matters when accuracy saturates: two runs at 100% accuracy can differ a lot in how
    confident (and how well calibrated) they are."""
    import torch

    from common_utils.data import load_course_dataset

    rows = load_course_dataset(DATASET, split, limit=limit)
    texts, labels = rows["text"], torch.tensor(rows["label"])
    logits = torch.cat([predict_logits(model, tokenizer, texts[i:i + batch_size], max_length=max_length)
                        for i in range(0, len(texts), batch_size)])
    accuracy = (logits.argmax(dim=-1) == labels).float().mean().item()
    loss = torch.nn.functional.cross_entropy(logits.float(), labels).item()
    return {"accuracy": accuracy, "loss": loss, "n": len(texts)}


def evaluate_accuracy(model, tokenizer, split: str = "test", max_length: int | None = None,
                      limit: int | None = None) -> float:
    """Accuracy on a held-out split of the course classification set."""
    return evaluate_classifier(model, tokenizer, split, max_length=max_length, limit=limit)["accuracy"]


def trainable_state(model) -> dict[str, Any]:
    """The tensors training changes (every parameter with requires_grad), detached on CPU."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save_trainable(path: str | Path, model) -> Path:
    """Write `trainable_state(model)` as safetensors, atomically."""
    from safetensors.torch import save_file

    from common_utils.core.artifacts import atomic_file

    with atomic_file(path) as tmp:
        save_file(trainable_state(model), str(tmp))
    return Path(path)


def load_trainable(model, path: str | Path):
    """Load saved trainable tensors into a model prepared with the same method; every saved name must
    exist in the model (a mismatch means the method or its options differ from the saved run)."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    names = dict(model.named_parameters())
    unknown = sorted(set(state) - set(names))
    if unknown:
        raise ValueError(f"{path} holds {len(unknown)} tensors this model lacks (e.g. {unknown[0]!r}): "
                         f"prepare the model with the same method and options as the saved run.")
    import torch

    with torch.no_grad():
        for name, tensor in state.items():
            names[name].copy_(tensor.to(names[name].device, names[name].dtype))
    return model


@dataclass
class ClassifierRun:
    """What one classification run produced and cost."""

    method: str
    model: Any
    tokenizer: Any
    history: list[tuple[int, float]]
    seconds: float  # training wall time (of the original run when reused)
    peak_rss_mb: float
    cuda_peak_mb: float | None
    trainable: int
    total: int
    accuracy: float  # held-out test split
    test_loss: float  # mean cross-entropy on the test split
    run_dir: Path
    reused: bool = False
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def record(self) -> dict[str, Any]:
        """The JSON-able part (for run.json and metrics files)."""
        skip = {"model", "tokenizer"}
        data = {k: v for k, v in asdict(self).items() if k not in skip}
        data["run_dir"] = str(self.run_dir)
        data["trainable_percent"] = self.trainable_percent
        return data


def _settings(method: Any, profile, args, n_examples: int, model_key: str,
              overrides: dict[str, Any]) -> dict[str, Any]:
    config = {} if isinstance(method, str) else {k: str(v) for k, v in sorted(method.to_dict().items())}
    return {"method": method_name(method), "peft_config": config, "model": model_key, "examples": n_examples,
            "max_steps": args.max_steps, "batch_size": args.per_device_train_batch_size,
            "learning_rate": args.learning_rate, "seed": args.seed,
            "max_length": profile.max_length,
            "overrides": {k: str(v) for k, v in sorted(overrides.items())}}


def load_base_classifier(profile, num_labels: int = 4):
    """The profile's encoder with a new classification head, seeded so the head starts the same way
    every time (methods that keep the head frozen rely on that)."""
    from common_utils.core.models import load_encoder
    from common_utils.core.runtime import seed_everything

    seed_everything(profile.seed)
    return load_encoder(profile.encoder, num_labels=num_labels)


def finetune_classifier(method: Any, profile, output_dir: str | Path, max_steps: int | None = None,
                        learning_rate: float | None = None, reuse: bool = True,
                        **peft_overrides: Any) -> ClassifierRun:
    """Train the encoder classifier with `method` ("full", "head", any registered PEFT method, or a
    peft config object),
    save what changed to `output_dir`, score the test split, and return the run record.

    With reuse=True a finished run with the same settings is loaded instead of retrained, so later
    stages (and the comparison) can call this freely; changed settings retrain from scratch."""
    from common_utils.core.artifacts import atomic_file
    from common_utils.core.monitor import count_parameters, Timer, track_peak_memory
    from common_utils.core.runtime import seed_everything
    from common_utils.training.sft import loss_history, stable_hash

    output_dir = Path(output_dir)
    model, tokenizer = load_base_classifier(profile)
    model = prepare_classifier(model, method, profile, **peft_overrides)
    sizes = profile  # the lab's Sizes: train_steps, batch_size, max_length (lab.yaml)
    arg_overrides: dict[str, Any] = {}
    if max_steps is not None:
        arg_overrides["max_steps"] = max_steps
    if learning_rate is not None:
        arg_overrides["learning_rate"] = learning_rate
    args = course_classify_args(profile, output_dir / "checkpoints", method, **arg_overrides)
    train_set = tokenize_split(tokenizer, "train", sizes.max_length)
    settings = _settings(method, profile, args, len(train_set), getattr(model, "course_model_key", ""),
                         peft_overrides)
    fingerprint = stable_hash(settings)
    params = count_parameters(model)
    run_file, weights = output_dir / RUN_FILE, output_dir / TRAINABLE_FILE

    if reuse and run_file.exists() and weights.exists():
        saved = json.loads(run_file.read_text(encoding="utf-8"))
        if saved.get("fingerprint") == fingerprint:
            print(f"Reusing the finished {method_name(method)} run in {output_dir} (same settings; reuse=False retrains).")
            load_trainable(model, weights)
            model.eval()
            return ClassifierRun(method_name(method), model, tokenizer, [tuple(h) for h in saved["history"]], saved["seconds"],
                                 saved["peak_rss_mb"], saved["cuda_peak_mb"], params.trainable, params.total,
                                 saved["accuracy"], saved["test_loss"], output_dir, reused=True,
                                 settings=settings)
        print(f"Settings changed since the run in {output_dir} was saved: training again.")

    seed_everything(profile.seed)
    trainer = make_classify_trainer(model, tokenizer, train_set, args)
    with track_peak_memory() as peak, Timer() as timer:
        trainer.train()
    model = trainer.model
    model.eval()
    scores = evaluate_classifier(model, tokenizer, "test", max_length=sizes.max_length)
    run = ClassifierRun(method_name(method), model, tokenizer, loss_history(trainer), timer.seconds, peak.peak_rss_mb,
                        peak.cuda_peak_mb, params.trainable, params.total, scores["accuracy"], scores["loss"],
                        output_dir, settings=settings)
    save_trainable(weights, model)
    record = {**run.record(), "fingerprint": fingerprint}
    with atomic_file(run_file) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    return run


def ensure_classifier(method: Any, profile, output_dir: str | Path, **kwargs: Any) -> ClassifierRun:
    """A later stage's entry point: reuse 02-Train's run when present, else say so and rebuild it
    with the same recipe (finetune_classifier), so every stage runs on its own."""
    if not (Path(output_dir) / RUN_FILE).exists():
        print(f"{Path(output_dir) / RUN_FILE} not found: 02-Train has not run here. Training {method_name(method)} now "
              f"with finetune_classifier (the same recipe as 02-Train) ...")
    return finetune_classifier(method, profile, output_dir, **kwargs)
