"""The model card and the hub-ready folder of a project.

The card is rendered with huggingface_hub's `ModelCard` / `ModelCardData` (metadata YAML header:
license, base_model, language, tags, eval results from the evaluation report) and read back with
`ModelCard.load` to check the header round-trips. Nothing here talks to the network: uploading is a
separate, explicit step (`upload_command` only returns the code to run).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from common_utils.project.definition import TaskDefinition

# Hub id of each course registry key's original weights (the embedded model is that model's Q4_1 GGUF,
# de-quantized: the card says so).
HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
HUB_FILES = ("README.md", "task_definition.yaml", "evaluation_report.yaml", "Modelfile")

CARD_BODY = """
# {name}

{description}

A LoRA fine-tune of [{base_model}](https://huggingface.co/{base_model}) ({base_note}), merged into the
base weights, that answers one label word: {labels}.

## How to use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{repo_id}")
tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
messages = [{{"role": "system", "content": {instruction!r}}},
            {{"role": "user", "content": "My package has not arrived yet."}}]
ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
print(tokenizer.decode(model.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1]:],
                       skip_special_tokens=True))
```

## Evaluation (test split, {n} tickets, greedy decoding)

| model | accuracy | macro-F1 |
| --- | ---: | ---: |
{model_rows}

Acceptance: {metric} >= {threshold} -> **{verdict}**.

Per-class F1 of the fine-tuned model: {per_class}.

## Training

LoRA r={lora_r}, alpha={lora_alpha}, all linear layers; {train_steps} steps, batch {batch_size}, learning rate
{learning_rate}; loss on the label word and the end-of-turn token only.

## Data

Synthetic support tickets built deterministically by the course (`datasets/build_datasets.py`, section
`support_tickets`; datasheet in `datasets/README.md`); imbalanced classes on purpose.

## Limitations

Trained on short synthetic tickets with clear keywords: real tickets are longer, noisier and often carry
several intents. Evaluated on {n} test tickets only; a classifier for real routing needs real data and a
human fallback for low-confidence answers.
"""


def base_model_id(model_key: str) -> str:
    """The hub id a card names as base_model for a course registry key."""
    from common_utils.core.models import get_spec

    spec = get_spec(model_key)
    return spec.location if spec.source == "hub" else HUB_IDS.get(model_key, model_key)


def model_card(definition: TaskDefinition, report: dict[str, Any], sizes, repo_id: str):
    """A huggingface_hub ModelCard: metadata header from the definition and the report, body as above."""
    from common_utils.core.models import get_spec

    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    candidate = report["models"][report["candidate"]]
    base = base_model_id(sizes.model)
    results = [EvalResult(task_type="text-classification", dataset_type="support_tickets",
                          dataset_name="Course support tickets (synthetic)", dataset_split="test",
                          metric_type=metric, metric_name=name, metric_value=round(candidate[metric], 4))
               for metric, name in (("macro_f1", "macro-F1"), ("accuracy", "accuracy"))]
    data = ModelCardData(model_name=definition.name, base_model=base, license=definition.license,
                         language=[lang.split("-")[0] for lang in definition.languages], library_name="transformers",
                         pipeline_tag="text-generation", tags=["lora", "text-classification", "llm-course"],
                         eval_results=results)
    rows = "\n".join(f"| {name} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} |" for name, m in report["models"].items())
    spec = get_spec(sizes.model)
    note = ("de-quantized from its Q4_1 GGUF, as the course embeds it" if spec.source == "embedded-gguf"
            else "bf16 on a GPU, fp32 on a CPU")
    body = CARD_BODY.format(
        name=definition.name, description=definition.description, base_model=base, base_note=note,
        labels=", ".join(definition.labels), repo_id=repo_id, instruction=definition.instruction_text,
        n=candidate["n"], model_rows=rows, metric=definition.metric, threshold=definition.threshold,
        verdict="PASSED" if report["passed"] else "FAILED",
        per_class=", ".join(f"{label} {s['f1']:.2f}" for label, s in candidate["per_class"].items()),
        lora_r=sizes.lora_r, lora_alpha=sizes.lora_alpha, train_steps=sizes.train_steps, batch_size=sizes.batch_size,
        learning_rate=sizes.learning_rate)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def modelfile(definition: TaskDefinition, gguf_name: str, max_tokens: int) -> str:
    """An Ollama Modelfile for a GGUF export of the merged model: ChatML template, the definition's
    instruction as the system prompt, greedy decoding, stop at the end-of-turn token."""
    return (f"FROM ./{gguf_name}\n"
            'TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
            '<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"""\n'
            f'SYSTEM """{definition.instruction_text}"""\n'
            "PARAMETER temperature 0\n"
            'PARAMETER stop "<|im_end|>"\n'
            f"PARAMETER num_predict {max_tokens}\n")


def write_hub_folder(folder: str | Path, card, definition: TaskDefinition, report_path: str | Path,
                     modelfile_text: str) -> list[str]:
    """Beside the merged model's files: README.md (the card), the definition, the report, the Modelfile.
    Returns the folder's file names."""
    folder = Path(folder)
    card.save(folder / "README.md")
    shutil.copyfile(definition.path, folder / "task_definition.yaml")
    shutil.copyfile(report_path, folder / "evaluation_report.yaml")
    (folder / "Modelfile").write_text(modelfile_text, encoding="utf-8")
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def upload_command(folder: str | Path, repo_id: str) -> str:
    """The code that would publish the folder (needs a token and the network; the lab never runs it)."""
    return (f"from huggingface_hub import HfApi\nHfApi().create_repo({repo_id!r}, exist_ok=True)\n"
            f"HfApi().upload_folder(folder_path={str(folder)!r}, repo_id={repo_id!r})")
