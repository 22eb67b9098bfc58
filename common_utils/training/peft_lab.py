"""What the four stages of the generative PEFT labs (PEFT Labs 01-05) share, so their notebooks keep the lesson.

Each of those labs fine-tunes the course model on the extraction task with one PEFT method: 01-Setup
scores the base model, 02-Train trains and checks the saved artifact, 03-Inference scores base vs
adapted on the held-out set, 04 merges or deploys. Lab-01 writes every one of these steps out where
the student learns it; the later labs call them from here, so their notebooks show what is new: the
method's config, its sanity checks and its checkpoints.

    lab = extraction_lab()                      # the lab's sizes (lab.yaml), seeded; outputs/metrics.json
    base_scores = lab.baseline(model, tokenizer)
    scores = lab.score({"base": base_predictions, "ia3": ia3_predictions})
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASK = "person_extraction"
METRICS_FILE = "metrics.json"
SCORE_ROWS = ("exact_match", "json_valid", "field_name", "field_age", "field_city")


@dataclass(frozen=True)
class ExtractionLab:
    """One notebook's view of its lab: the sizes, the outputs folder and the held-out test set."""

    sizes: Any  # common_utils.core.runtime.Sizes
    outputs: Path = field(default_factory=lambda: Path("outputs"))

    @property
    def metrics(self) -> Path:
        """outputs/metrics.json: one section per stage, rendered into the README by scripts/render_metrics.py."""
        return self.outputs / METRICS_FILE

    def record(self, section: str, values: dict[str, Any]) -> dict[str, Any]:
        """Write what a stage measured under `section` of the lab's metrics file."""
        from common_utils.core.monitor import write_metrics

        return write_metrics(self.metrics, section, values)

    def test_rows(self, limit: int | None = None):
        """The held-out test split: `sizes.eval_samples` rows unless `limit` says otherwise."""
        from common_utils.data import load_course_dataset

        return load_course_dataset(TASK, "test", limit=limit or self.sizes.eval_samples)

    def valid_rows(self, limit: int = 4):
        """A few rows of the validation split: probes for comparing two models' logits."""
        from common_utils.data import load_course_dataset

        return load_course_dataset(TASK, "valid", limit=limit)

    def show_task(self) -> None:
        """Print the split sizes and one training example as chat messages (the task Lab-01 introduces)."""
        from common_utils.data import load_course_dataset
        from common_utils.tasks.extraction import extraction_messages

        train = load_course_dataset(TASK, "train")
        print(f"train: {len(train)} rows, test (scored here): {len(self.test_rows())} rows")
        for message in extraction_messages(train[0], with_answer=True):
            print(f"[{message['role']}] {message['content']}")

    def generate(self, model, tokenizer, rows=None, show_progress: bool = True) -> list[str]:
        """Greedy replies to `rows` (default: the test rows) with the training chat template, in batches."""
        from common_utils.core.generation import generate_batch
        from common_utils.tasks.extraction import extraction_messages

        rows = self.test_rows() if rows is None else rows
        return generate_batch(model, tokenizer, [extraction_messages(row) for row in rows], self.sizes.max_new_tokens,
                              show_progress=show_progress)

    def base_and_adapted(self, model, tokenizer, name: str, rows=None) -> dict[str, list[str]]:
        """Replies of one loaded peft model with its adapter switched off (`disable_adapter()`: the base
        model) and on, as Lab-01 03-Inference does step by step: `{"base": [...], name: [...]}`."""
        rows = self.test_rows() if rows is None else rows
        with model.disable_adapter():
            base = self.generate(model, tokenizer, rows)
        return {"base": base, name: self.generate(model, tokenizer, rows)}

    def baseline(self, model, tokenizer, examples: int = 2) -> dict[str, float]:
        """Score the (not yet adapted) model on the test rows, show a few replies and record section "base"."""
        from common_utils.tasks.extraction import score_extraction

        rows = self.test_rows()
        predictions = self.generate(model, tokenizer, rows)
        scores = score_extraction(predictions, rows["output"])
        for row, prediction in list(zip(rows, predictions))[:examples]:
            print(f"input : {row['input']}\nwant  : {row['output']}\nbase  : {prediction!r}\n")
        print({key: round(value, 3) for key, value in scores.items()})
        self.record("base", scores)
        return scores

    def score(self, predictions: Mapping[str, list[str]], section: str | None = "inference",
              rows=None) -> dict[str, dict[str, float]]:
        """Score each model's replies to the same rows, print them side by side (with the change from the
        first model when there are two) and record them under `section`."""
        from common_utils.tasks.extraction import score_extraction

        rows = self.test_rows() if rows is None else rows
        scores = {name: score_extraction(replies, rows["output"]) for name, replies in predictions.items()}
        print(score_table(scores))
        if section:
            self.record(section, scores)
        return scores

    def show(self, predictions: Mapping[str, list[str]], n: int = 3, rows=None) -> None:
        """The first `n` test rows with what each model replied, to read beside the scores."""
        rows = self.test_rows() if rows is None else rows
        width = max(len("input"), *map(len, predictions))
        for index, row in zip(range(n), rows):
            print(f"{'input':{width}s}: {row['input']}\n{'want':{width}s}: {row['output']}")
            for name, replies in predictions.items():
                print(f"{name:{width}s}: {replies[index]!r}")
            print()

    def mistakes(self, replies: list[str], n: int = 4, rows=None) -> list[tuple[dict[str, Any], str]]:
        """Rows whose reply is not exactly the reference object: print how many and the first `n`."""
        from common_utils.tasks.extraction import parse_json_object

        rows = self.test_rows() if rows is None else rows
        wrong = [(row, reply) for row, reply in zip(rows, replies)
                 if parse_json_object(reply) != parse_json_object(row["output"])]
        print(f"{len(wrong)} mistake(s) out of {len(rows)}")
        for row, reply in wrong[:n]:
            print(f"  want: {row['output']}\n  got : {reply!r}")
        return wrong


def extraction_lab(outputs: str | Path = "outputs") -> ExtractionLab:
    """Start a stage: this lab's sizes from its lab.yaml (found from the notebook's folder), every RNG
    seeded with the lab's seed, artifacts under `outputs/`. Prints the sizes."""
    from common_utils.core.runtime import lab_sizes, seed_everything

    sizes = lab_sizes()
    seed_everything(sizes.seed)
    print(sizes)
    return ExtractionLab(sizes, Path(outputs))


def score_table(scores: Mapping[str, Mapping[str, float]], metrics: Sequence[str] = SCORE_ROWS) -> str:
    """Metrics as rows, models as columns; a `delta` column (second minus first) when there are two."""
    names = list(scores)
    width = max(8, *map(len, names))
    with_delta = len(names) == 2
    lines = [f"{'metric':14s} " + " ".join(f"{name:>{width}s}" for name in names) + (f" {'delta':>7s}" if with_delta else "")]
    for metric in metrics:
        values = [scores[name][metric] for name in names]
        delta = f" {values[1] - values[0]:+7.3f}" if with_delta else ""
        lines.append(f"{metric:14s} " + " ".join(f"{value:{width}.3f}" for value in values) + delta)
    return "\n".join(lines)


def chat_batch(tokenizer, rows, device=None):
    """The rows' prompts (chat template + generation prompt, as in training) as one padded tensor batch,
    for comparing two models' logits on identical inputs."""
    from common_utils.tasks.extraction import extraction_messages

    texts = [tokenizer.apply_chat_template(extraction_messages(row), tokenize=False, add_generation_prompt=True)
             for row in rows]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return batch.to(device) if device is not None else batch


def logits_of(model, batch):
    """The model's fp32 logits for `batch`, without gradients."""
    import torch

    with torch.inference_mode():
        return model(**batch).logits.float()


@dataclass(frozen=True)
class LogitGap:
    """How far two models' logits are apart on the real (unpadded) tokens of one batch."""

    max_abs: float  # largest |first - second|
    scale: float  # largest |first|: float rounding grows with it

    @property
    def relative(self) -> float:
        return self.max_abs / self.scale if self.scale else float("inf")

    def __str__(self) -> str:
        return f"max |logit difference| {self.max_abs:.2e} ({self.relative:.1e} of the largest logit, {self.scale:.1f})"


def merge_tolerance(dtype) -> float:
    """Largest relative logit gap (see LogitGap.relative) a correct merge may leave in `dtype`.

    Merging rounds W + BA back to the weights' dtype once per weight. In fp32 that is invisible
    (Lab-01 measured 3.8e-6 of the largest logit); in bf16, with 8 significant bits, the same merge
    measured 0.038 (max 1.56 of 41.5) with identical greedy generations. The bound is 8 machine
    epsilons (fp32: floored at 1e-4; bf16: 0.0625, fp16: 0.0078): a merge that drops or doubles the
    adapter moves logits by its whole effect (Lab-01: 13.3 of 41.5, 0.32) and still fails."""
    import torch

    return max(1e-4, 8 * torch.finfo(dtype).eps)


def compare_logits(first, second, batch, include_padding: bool = False) -> LogitGap:
    """Compare two models (or logits already computed, e.g. before a merge changed the model in place)
    on the same batch. Positions the attention mask hides are left out unless `include_padding`: a
    reloaded artifact must reproduce even those, a merge is judged on the real tokens. Soft prompts
    put their virtual tokens in front of the sequence; those positions always count."""
    import torch

    a = first if isinstance(first, torch.Tensor) else logits_of(first, batch)
    b = second if isinstance(second, torch.Tensor) else logits_of(second, batch)
    mask = batch["attention_mask"].bool()
    if include_padding:
        mask = torch.ones(a.shape[:2], dtype=torch.bool, device=a.device)
    elif a.shape[1] > mask.shape[1]:  # prompt tuning: n virtual positions before the real tokens
        mask = torch.cat([mask.new_ones(mask.shape[0], a.shape[1] - mask.shape[1]), mask], dim=1)
    return LogitGap((a - b)[mask].abs().max().item(), a[mask].abs().max().item())


def trainable_names(model) -> list[str]:
    """Names of the parameters the optimizer will update."""
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def load_merged(path: str | Path, like_tokenizer, device=None):
    """(model, tokenizer) of a merged checkpoint with plain transformers, fp32: what a deployment without
    peft loads. The pad token is set as the course's tokenizer sets it (distinct from EOS)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = like_tokenizer.pad_token
    return (model.to(device) if device is not None else model).eval(), tokenizer


def forward_pass(model, batch, adapter: bool = True) -> Callable[[], None]:
    """A zero-argument forward pass of `model` over `batch` to time; adapter=False runs it inside the
    peft model's disable_adapter(), i.e. as the base model."""
    import contextlib

    import torch

    def forward() -> None:
        switch = contextlib.nullcontext() if adapter else model.disable_adapter()
        with torch.inference_mode(), switch:
            model(**batch)

    return forward


@dataclass(frozen=True)
class Latency:
    """Median milliseconds per forward pass by name, and the machine's load while they were measured."""

    ms: dict[str, float]
    load_average: float  # 1-minute load average at the end: timing noise grows with it

    def overhead(self, name: str, over: str | None = None) -> float:
        """Relative extra time of `name` over `over` (default: the first pass measured): 0.05 is 5 % slower."""
        return self.ms[name] / self.ms[over or next(iter(self.ms))] - 1


def forward_latency_ms(passes: Mapping[str, Callable[[], object]], rounds: int = 3, repeats: int = 3,
                       warmup: int = 1) -> Latency:
    """Median milliseconds of each forward pass, measured in interleaved rounds (each round times every
    pass with median_seconds) so a load change on a shared machine hits all of them alike. Prints a table
    with the overhead over the first pass and the load average: a small overhead can drown in its noise."""
    from common_utils.core.monitor import median_seconds

    times: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(rounds):
        for name, forward in passes.items():
            times[name].append(median_seconds(forward, repeats=repeats, warmup=warmup))
    result = Latency({name: 1000 * sorted(values)[rounds // 2] for name, values in times.items()},
                     os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"))
    print(f"forward pass, median of {rounds} interleaved rounds (1-min load average {result.load_average:.1f})")
    for name, ms in result.ms.items():
        print(f"  {name:10s} {ms:8.1f} ms {result.overhead(name):+8.1%}")
    return result
