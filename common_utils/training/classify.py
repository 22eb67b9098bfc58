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

Recipes take the lab's `sizes` (`lab_sizes()`: train_steps, batch_size, max_length, eval_batch_size,
plus the profile's encoder and seed). The second half of the module holds what the NLU labs' stages
share around a run, so each notebook keeps only what its method teaches: the untrained baseline
(`untrained_scores`), several seeds of one method (`finetune_seeds`, `runs_table`, `seed_summary`), a
per-class report of a reloaded model (`class_report`) and the logits comparison that proves a
deployment reproduces the trained model (`deploy_check`).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DATASET = "topic_classification"
TRAINABLE_FILE = "trainable.safetensors"
RUN_FILE = "run.json"
BASELINES = ("full", "head")  # not PEFT methods, but the two ends every comparison needs


# Tokens per sentence when a caller gives no max_length (the smoke sizes of the NLU labs' lab.yaml).
DEFAULT_MAX_LENGTH = 32
# Sentences per forward pass when scoring, when the lab's sizes declare no eval_batch_size.
DEFAULT_EVAL_BATCH = 64

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


def prepare_classifier(model, method: Any, sizes=None, **overrides: Any):
    """Make `model` (an encoder with a sequence-classification head) train the way `method` says.

    "full": every weight trains. "head": only the head. Any registered PEFT method: applied through
    the factory, with peft's SEQ_CLS task type so peft keeps the new head trainable too;
    `train_head=False` freezes that head at its seeded random start, so only the method's own parameters
    learn (the control that shows prompts learned something the head could not). A peft
    config object (task_type="SEQ_CLS") is applied as written (a copy: the caller's object stays as is)."""
    from common_utils.peft.methods import apply_peft, get_method

    if not isinstance(method, str):  # a peft config object, e.g. PromptTuningConfig for a side experiment
        import copy

        from peft import get_peft_model

        return get_peft_model(model, copy.deepcopy(method))  # peft fills fields of the config it is given
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
    if spec.applies_itself:  # bitfit: takes train_head itself
        return apply_peft(model, method, sizes, **overrides)
    train_head = overrides.pop("train_head", True)
    model = apply_peft(model, method, sizes, **{"task_type": "SEQ_CLS", **overrides})
    if not train_head:  # the method alone must do the work: the head stays at its seeded random start
        for name, parameter in model.named_parameters():
            if {"classifier", "score"} & set(name.split(".")):
                parameter.requires_grad = False
    return model


def course_classify_args(sizes, output_dir: str | Path, method: Any, **overrides: Any):
    """TrainingArguments with the course defaults for encoder classification (steps, batch and seed from
    the lab's `sizes`); any field can be overridden."""
    from common_utils.core.runtime import get_device

    from transformers import TrainingArguments

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
        seed=sizes.seed,
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


def eval_batch_size(sizes) -> int:
    """Sentences per scoring pass: the lab's `eval_batch_size`, else DEFAULT_EVAL_BATCH."""
    return getattr(sizes, "eval_batch_size", DEFAULT_EVAL_BATCH) if sizes is not None else DEFAULT_EVAL_BATCH


def _tokenized(tokenizer, texts: list[str], max_length: int | None, device):
    """One padded batch for `model(**batch)`: token_type_ids dropped (see tokenize_split)."""
    batch = tokenizer(list(texts), truncation=True, max_length=max_length or DEFAULT_MAX_LENGTH, padding=True,
                      return_tensors="pt")
    batch.pop("token_type_ids", None)
    return batch.to(device)


def _batched_logits(model, tokenizer, texts: list[str], max_length: int | None, batch_size: int | None,
                    forward: Callable[[dict[str, Any]], Any]):
    """`forward(tokenized batch)` over `texts` in eval mode without gradients, `batch_size` texts at a
    time (None: one batch), logits concatenated on the CPU. Two logits tensors compare exactly only
    when they were computed with the same batching (padding lengths change the floating-point sums)."""
    import torch

    texts = list(texts)  # a datasets Column is not a list, and tokenizers reject it
    model.eval()
    device = next(model.parameters()).device
    step = batch_size or max(len(texts), 1)
    with torch.no_grad():
        chunks = [forward(_tokenized(tokenizer, texts[start:start + step], max_length, device)).cpu()
                  for start in range(0, len(texts), step)]
    return torch.cat(chunks)


def predict_logits(model, tokenizer, texts: list[str], max_length: int | None = None,
                   batch_size: int | None = None):
    """Logits for raw texts, in eval mode without gradients: what 'identical predictions' checks compare.
    batch_size=None runs every text in one batch."""
    return _batched_logits(model, tokenizer, texts, max_length, batch_size, lambda batch: model(**batch).logits)


def predict_labels(model, tokenizer, texts: list[str], max_length: int | None = None,
                   batch_size: int = DEFAULT_EVAL_BATCH) -> list[int]:
    """Argmax label ids for raw texts, in eval mode without gradients, batch by batch."""
    return predict_logits(model, tokenizer, texts, max_length, batch_size).argmax(dim=-1).tolist()


def logits_with_fixed_prompt(model, tokenizer, prompt, texts: list[str], max_length: int | None = None,
                             batch_size: int | None = None):
    """Logits of a plain transformers classifier with a fixed soft prompt prepended to every input.

    This is what a prompt-learning model (prompt tuning, P-Tuning) computes at inference, written out
    without peft: embed the tokens, put the `prompt` vectors (num_virtual_tokens x hidden) in front,
    extend the attention mask with ones. P-Tuning's prompt encoder is only needed to produce `prompt`
    once, so a deployment can ship these vectors instead of the encoder. Batched like predict_logits."""
    import torch

    def with_prompt(batch: dict[str, Any]):
        embeddings = model.get_input_embeddings()(batch["input_ids"])
        n = embeddings.shape[0]
        prefix = prompt.to(embeddings.device, embeddings.dtype).unsqueeze(0).expand(n, -1, -1)
        ones = torch.ones(n, prefix.shape[1], dtype=batch["attention_mask"].dtype, device=embeddings.device)
        mask = torch.cat([ones, batch["attention_mask"]], dim=1)
        return model(inputs_embeds=torch.cat([prefix, embeddings], dim=1), attention_mask=mask).logits

    return _batched_logits(model, tokenizer, texts, max_length, batch_size, with_prompt)


def split_rows(split: str = "test", limit: int | None = None):
    """Rows (text, label, label_text) of a split of the course classification set."""
    from common_utils.data import load_course_dataset

    return load_course_dataset(DATASET, split, limit=limit)


def eval_logits(model, tokenizer, sizes, prompt=None, split: str = "test"):
    """Logits for every sentence of `split` at the lab's max_length, in eval_batch_size batches; with
    `prompt`, through logits_with_fixed_prompt (a plain model plus a fixed soft prompt). Every call
    batches alike, so logits of two models compare exactly."""
    texts = split_rows(split)["text"]
    if prompt is not None:
        return logits_with_fixed_prompt(model, tokenizer, prompt, texts, sizes.max_length, eval_batch_size(sizes))
    return predict_logits(model, tokenizer, texts, sizes.max_length, eval_batch_size(sizes))


def _scores(logits, labels) -> dict[str, float]:
    import torch

    labels = torch.as_tensor(list(labels))
    accuracy = (logits.argmax(dim=-1) == labels).float().mean().item()
    loss = torch.nn.functional.cross_entropy(logits.float(), labels).item()
    return {"accuracy": accuracy, "loss": loss, "n": len(labels)}


def evaluate_classifier(model, tokenizer, split: str = "test", max_length: int | None = None,
                        limit: int | None = None, batch_size: int = DEFAULT_EVAL_BATCH) -> dict[str, float]:
    """Accuracy and mean cross-entropy on a held-out split of the course classification set.

    The loss matters when accuracy saturates: two runs at 100% accuracy can differ a lot in how
    confident (and how well calibrated) they are."""
    rows = split_rows(split, limit)
    return _scores(predict_logits(model, tokenizer, rows["text"], max_length, batch_size), rows["label"])


def evaluate_accuracy(model, tokenizer, split: str = "test", max_length: int | None = None,
                      limit: int | None = None) -> float:
    """Accuracy on a held-out split of the course classification set."""
    return evaluate_classifier(model, tokenizer, split, max_length=max_length, limit=limit)["accuracy"]


def eval_scores(model, tokenizer, sizes, split: str = "test") -> dict[str, float]:
    """evaluate_classifier at the lab's max_length and eval_batch_size: accuracy, loss, n."""
    return evaluate_classifier(model, tokenizer, split, max_length=sizes.max_length,
                               batch_size=eval_batch_size(sizes))


def trainable_state(model) -> dict[str, Any]:
    """The tensors training changes (every parameter with requires_grad), detached on CPU."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save_trainable(path: str | Path, model) -> Path:
    """Write `trainable_state(model)` as safetensors, atomically."""
    from common_utils.core.artifacts import atomic_file

    from safetensors.torch import save_file

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

    def summary(self) -> dict[str, Any]:
        """The numbers a lab reports for one run (metrics.json): size, score, cost, loss first/last."""
        return {"trainable": self.trainable, "trainable_percent": self.trainable_percent, "accuracy": self.accuracy,
                "test_loss": self.test_loss, "seconds": self.seconds, "peak_rss_mb": self.peak_rss_mb,
                "cuda_peak_mb": self.cuda_peak_mb, "loss_first": self.history[0][1],
                "loss_last": self.history[-1][1], "steps": len(self.history),
                "learning_rate": self.settings.get("learning_rate")}


def _settings(method: Any, sizes, args, n_examples: int, model_key: str,
              overrides: dict[str, Any]) -> dict[str, Any]:
    config = {} if isinstance(method, str) else {k: str(v) for k, v in sorted(method.to_dict().items())}
    return {"method": method_name(method), "peft_config": config, "model": model_key, "examples": n_examples,
            "max_steps": args.max_steps, "batch_size": args.per_device_train_batch_size,
            "learning_rate": args.learning_rate, "seed": args.seed,
            "max_length": sizes.max_length,
            "overrides": {k: str(v) for k, v in sorted(overrides.items())}}


def load_base_classifier(sizes, num_labels: int = 4):
    """The sizes' encoder with a new classification head, seeded so the head starts the same way
    every time (methods that keep the head frozen rely on that)."""
    from common_utils.core.models import load_encoder
    from common_utils.core.runtime import seed_everything

    seed_everything(sizes.seed)
    return load_encoder(sizes.encoder, num_labels=num_labels)


def finetune_classifier(method: Any, sizes, output_dir: str | Path, max_steps: int | None = None,
                        learning_rate: float | None = None, reuse: bool = True,
                        **peft_overrides: Any) -> ClassifierRun:
    """Train the encoder classifier with `method` ("full", "head", any registered PEFT method, or a
    peft config object) for the lab's `sizes`, save what changed to `output_dir`, score the test
    split, and return the run record.

    With reuse=True a finished run with the same settings is loaded instead of retrained, so later
    stages (and the comparison) can call this freely; changed settings retrain from scratch."""
    from common_utils.core.artifacts import atomic_file
    from common_utils.core.monitor import Timer, count_parameters, track_peak_memory
    from common_utils.core.runtime import seed_everything
    from common_utils.training.sft import loss_history, stable_hash

    output_dir = Path(output_dir)
    model, tokenizer = load_base_classifier(sizes)
    model = prepare_classifier(model, method, sizes, **peft_overrides)
    arg_overrides: dict[str, Any] = {}
    if max_steps is not None:
        arg_overrides["max_steps"] = max_steps
    if learning_rate is not None:
        arg_overrides["learning_rate"] = learning_rate
    args = course_classify_args(sizes, output_dir / "checkpoints", method, **arg_overrides)
    train_set = tokenize_split(tokenizer, "train", sizes.max_length)
    settings = _settings(method, sizes, args, len(train_set), getattr(model, "course_model_key", ""),
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

    seed_everything(sizes.seed)
    trainer = make_classify_trainer(model, tokenizer, train_set, args)
    with track_peak_memory() as peak, Timer() as timer:
        trainer.train()
    model = trainer.model
    model.eval()
    scores = eval_scores(model, tokenizer, sizes)
    run = ClassifierRun(method_name(method), model, tokenizer, loss_history(trainer), timer.seconds, peak.peak_rss_mb,
                        peak.cuda_peak_mb, params.trainable, params.total, scores["accuracy"], scores["loss"],
                        output_dir, settings=settings)
    save_trainable(weights, model)
    record = {**run.record(), "fingerprint": fingerprint}
    with atomic_file(run_file) as tmp:  # written last: its presence means the run finished
        tmp.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    return run


def ensure_classifier(method: Any, sizes, output_dir: str | Path, **kwargs: Any) -> ClassifierRun:
    """A later stage's entry point: reuse 02-Train's run when present, else say so and rebuild it
    with the same recipe (finetune_classifier), so every stage runs on its own. The run record
    (run.json, written last) is the artifact `ensure` looks for; a run saved with other settings is
    retrained by finetune_classifier itself."""
    from common_utils.core.artifacts import ensure

    built: list[ClassifierRun] = []
    ensure(Path(output_dir) / RUN_FILE, lambda: built.append(finetune_classifier(method, sizes, output_dir, **kwargs)),
           made_by=f"02-Train: finetune_classifier({method_name(method)!r}, ...)")
    return built[0] if built else finetune_classifier(method, sizes, output_dir, **kwargs)


# --- What the NLU labs' stages share around a run: baseline, seeds, reports, deployment checks ---


def untrained_scores(sizes) -> dict[str, float]:
    """Test accuracy and loss of the seeded, untrained classifier: the baseline every stage must beat.

    Measured, not read from an earlier stage's metrics: it costs one load and one pass over the test
    split, and it is always the baseline of *these* sizes (same seed, hence the same random head)."""
    model, tokenizer = load_base_classifier(sizes)
    return eval_scores(model, tokenizer, sizes)


def finetune_seeds(method: Any, sizes, output_dir: str | Path, seeds: Sequence[int],
                   **kwargs: Any) -> list[ClassifierRun]:
    """finetune_classifier once per seed (`output_dir/seed<N>`), everything else equal. A seed changes
    the head's and the prompts' initial values and the order of the training data."""
    return [finetune_classifier(method, sizes.with_overrides(seed=seed), Path(output_dir) / f"seed{seed}", **kwargs)
            for seed in seeds]


def _as_groups(runs: Mapping[str, ClassifierRun | Sequence[ClassifierRun]]) -> dict[str, list[ClassifierRun]]:
    return {name: [group] if isinstance(group, ClassifierRun) else list(group) for name, group in runs.items()}


def runs_table(runs: Mapping[str, ClassifierRun | Sequence[ClassifierRun]]) -> str:
    """One line per run (a name maps to a run, or to its runs over seeds): seed, learning rate,
    trainable parameters, training loss first -> last, test accuracy and loss, training seconds."""
    lines = [f"{'run':14s} {'seed':>4s} {'lr':>7s} {'trainable':>11s} {'%':>8s} {'train loss':>15s} {'test acc':>8s} "
             f"{'test loss':>9s} {'seconds':>7s}"]
    for name, group in _as_groups(runs).items():
        for run in group:
            lines.append(f"{name:14s} {run.settings.get('seed', ''):>4} {run.settings.get('learning_rate', 0):>7.0e} "
                         f"{run.trainable:>11,} {run.trainable_percent:>8.3f} "
                         f"{run.history[0][1]:>6.3f} -> {run.history[-1][1]:<6.3f} "
                         f"{run.accuracy:>8.3f} {run.test_loss:>9.3f} {run.seconds:>7.1f}")
    return "\n".join(lines)


def _spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


class SeedSummary(dict):
    """seed_summary's result: a plain dict (method -> flat metrics, JSON-ready) that prints as a table
    of mean ± standard deviation per method."""

    def __str__(self) -> str:
        lines = [f"{'method':14s} {'seeds':>5s} {'trainable':>10s} {'train loss (last 3)':>20s} {'test loss':>15s} "
                 f"{'test acc':>15s} {'s/run':>6s}"]
        for name, row in self.items():
            cells = [f"{row[k + '_mean']:.3f} ± {row[k + '_std']:.3f}"
                     for k in ("train_loss_last3", "test_loss", "accuracy")]
            lines.append(f"{name:14s} {row['seeds']:>5d} {row['trainable']:>10,} {cells[0]:>20s} {cells[1]:>15s} "
                         f"{cells[2]:>15s} {row['seconds_mean']:>6.1f}")
        return "\n".join(lines)


def seed_summary(runs: Mapping[str, Sequence[ClassifierRun]], window: int = 3) -> SeedSummary:
    """Per method, over its seeds: mean and standard deviation of the final training loss (mean of the
    last `window` steps), test loss and test accuracy, plus the worst seed's accuracy and loss
    reduction (what a checkpoint asserts). Flat keys, ready for metrics.json; print it for a table."""
    from common_utils.training.sft import loss_reduction

    summary = SeedSummary()
    for name, group in _as_groups(runs).items():
        row: dict[str, float] = {"trainable": group[0].trainable, "trainable_percent": group[0].trainable_percent,
                                 "seeds": len(group)}
        measured = {"train_loss_last3": [sum(loss for _, loss in r.history[-window:]) / window for r in group],
                    "test_loss": [r.test_loss for r in group], "accuracy": [r.accuracy for r in group]}
        for key, values in measured.items():
            row[f"{key}_mean"], row[f"{key}_std"] = _spread(values)
        row["accuracy_min"] = min(measured["accuracy"])
        row["loss_reduction_min"] = min(loss_reduction(r.history, window) for r in group)
        row["seconds_mean"] = statistics.mean(r.seconds for r in group)
        summary[name] = row
    return summary


@dataclass
class ClassReport:
    """Test-split scores of one model, per class, with the sentences it got wrong."""

    accuracy: float
    loss: float
    per_class: dict[str, float]  # label text -> accuracy on that class
    errors: list[int]  # row indices of the wrong predictions
    predictions: list[int]

    @property
    def worst_class(self) -> float:
        return min(self.per_class.values())

    def metrics(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "loss": self.loss, "per_class": self.per_class, "errors": len(self.errors)}

    def versus(self, base_accuracy: float, recorded: float) -> str:
        """The numbers a reload checkpoint asserts: margin over the untrained baseline, the worst class,
        and this accuracy against the one training recorded."""
        return (f"margin over base {self.accuracy - base_accuracy:+.3f}; worst class {self.worst_class:.3f}; "
                f"reloaded {self.accuracy:.3f} vs recorded {recorded:.3f}")


def class_report(model, tokenizer, sizes, name: str = "model", show_errors: int = 5,
                 split: str = "test") -> ClassReport:
    """Score `model` on `split` and print its accuracy per class and its first wrong predictions: a
    single accuracy can hide a class the model gave up on. Logits are batched as in finetune_classifier,
    so a reloaded run reproduces the accuracy its training recorded exactly."""
    rows = split_rows(split)
    names = label_names()
    logits = predict_logits(model, tokenizer, rows["text"], sizes.max_length, eval_batch_size(sizes))
    scores = _scores(logits, rows["label"])
    predicted, gold = logits.argmax(dim=-1).tolist(), list(rows["label"])
    per_class = {}
    print(f"{name}: test accuracy {scores['accuracy']:.3f}, test loss {scores['loss']:.3f}")
    for label_id, label in enumerate(names):
        members = [i for i, y in enumerate(gold) if y == label_id]
        per_class[label] = sum(predicted[i] == label_id for i in members) / len(members)
        print(f"  {label:12s} n={len(members):3d}  accuracy {per_class[label]:.3f}")
    errors = [i for i, (p, y) in enumerate(zip(predicted, gold)) if p != y]
    print(f"  {len(errors)} errors" + (":" if errors and show_errors else ""))
    for i in errors[:show_errors]:
        print(f"    want {names[gold[i]]:10s} got {names[predicted[i]]:10s} | {rows['text'][i]}")
    return ClassReport(scores["accuracy"], scores["loss"], per_class, errors, predicted)


@dataclass
class DeployCheck:
    """How a deployed model's logits compare with the trained model's, and with the untouched base's."""

    max_diff: float  # max |logit difference| trained vs deployed
    same_predictions: bool
    base_agreement: float  # share of texts where the untouched base predicts like the trained model
    base_max_shift: float  # max |logit difference| trained vs untouched base
    n: int

    def metrics(self) -> dict[str, float]:
        return {"max_logit_diff": self.max_diff, "base_agreement": self.base_agreement,
                "base_max_logit_shift": self.base_max_shift}

    def __str__(self) -> str:
        return (f"max |logit difference| trained vs deployed: {self.max_diff:.2e}; identical predictions: "
                f"{self.same_predictions}; the untouched base agrees with the trained model on "
                f"{self.base_agreement:.1%} of {self.n} texts (max logit shift {self.base_max_shift:.3f})")


def deploy_check(trained, deployed, base) -> DeployCheck:
    """Compare three logits tensors over the same texts (e.g. from eval_logits): the trained model, its
    deployment, and the base without what training learned. The first pair must match; the base must
    not, or the match would prove nothing."""
    import torch

    trained_ids = trained.argmax(-1)
    return DeployCheck(max_diff=(trained - deployed).abs().max().item(),
                       same_predictions=torch.equal(trained_ids, deployed.argmax(-1)),
                       base_agreement=(base.argmax(-1) == trained_ids).float().mean().item(),
                       base_max_shift=(base - trained).abs().max().item(), n=len(trained))
