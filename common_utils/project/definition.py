"""task_definition.yaml: what a fine-tuning project promises before any training starts.

A definition names the labels, where input and answer live in each JSONL row, the instruction the
model sees, the metric and the acceptance threshold the evaluation report is judged against. Loading it
checks every field and says which one is wrong and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFINITION_FILE = "task_definition.yaml"
SPLITS = ("train", "valid", "test")
METRICS = ("macro_f1", "accuracy")


class DefinitionError(ValueError):
    """task_definition.yaml is missing a field or has a wrong value; the message names it and the fix."""


@dataclass(frozen=True)
class TaskDefinition:
    """A label-word classification project, as written in task_definition.yaml."""

    name: str
    labels: tuple[str, ...]
    instruction: str  # may contain {labels}, filled with the comma-separated label list
    metric: str = "macro_f1"
    threshold: float = 0.8
    input_field: str = "text"
    output_field: str = "label"
    data_dir: str = "data"  # relative to the definition file
    description: str = ""
    license: str = "apache-2.0"
    languages: tuple[str, ...] = ("en",)
    path: Path | None = field(default=None, compare=False)

    @property
    def instruction_text(self) -> str:
        """The system turn the model sees: the instruction with the label list filled in."""
        return self.instruction.replace("{labels}", ", ".join(self.labels))

    @property
    def root(self) -> Path:
        """The project folder: where the definition file lives."""
        return self.path.parent if self.path else Path.cwd()

    def split_path(self, split: str) -> Path:
        """The JSONL file of one split: <project>/<data_dir>/<split>.jsonl."""
        return self.root / self.data_dir / f"{split}.jsonl"


def _require(raw: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in raw:
        raise DefinitionError(f"{where}: missing field {key!r}. Add it (see `python -m common_utils project init`).")
    value = raw[key]
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise DefinitionError(f"{where}: field {key!r} should be a non-empty {kind.__name__}, got {value!r}")
    return value


def parse_definition(raw: Any, where: str = DEFINITION_FILE) -> TaskDefinition:
    """A TaskDefinition from the parsed YAML mapping; DefinitionError names the first wrong field."""
    if not isinstance(raw, dict):
        raise DefinitionError(f"{where}: expected a YAML mapping of fields, got {type(raw).__name__}")
    labels = _require(raw, "labels", list, where)
    if len(labels) < 2 or not all(isinstance(x, str) and x.strip() for x in labels):
        raise DefinitionError(f"{where}: 'labels' needs at least two non-empty strings, got {labels!r}")
    bad = [x for x in labels if x != x.strip().lower() or " " in x]
    if bad:
        raise DefinitionError(f"{where}: labels must be single lower-case words (the model answers one word): {bad}")
    if len(set(labels)) != len(labels):
        raise DefinitionError(f"{where}: duplicate labels in {labels!r}")
    metric = raw.get("metric", "macro_f1")
    if metric not in METRICS:
        raise DefinitionError(f"{where}: metric {metric!r} is not supported; use one of {', '.join(METRICS)}")
    threshold = raw.get("threshold", 0.8)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise DefinitionError(f"{where}: threshold should be a number in (0, 1], got {threshold!r}")
    io = {key: raw.get(key) or {} for key in ("input", "output")}
    for key, spec in io.items():
        if not isinstance(spec, dict):
            raise DefinitionError(f"{where}: {key!r} should be a mapping like {{field: text, description: ...}}")
    languages = raw.get("languages", ["en"])
    return TaskDefinition(
        name=_require(raw, "name", str, where), labels=tuple(labels),
        instruction=_require(raw, "instruction", str, where), metric=metric, threshold=float(threshold),
        input_field=io["input"].get("field", "text"), output_field=io["output"].get("field", "label"),
        data_dir=str(raw.get("data_dir", "data")), description=str(raw.get("description", "")),
        license=str(raw.get("license", "apache-2.0")),
        languages=tuple(languages if isinstance(languages, list) else [languages]))


def load_definition(path: str | Path) -> TaskDefinition:
    """Read a project's task_definition.yaml (`path` is the file or the project folder)."""
    import yaml

    path = Path(path)
    if path.is_dir():
        path = path / DEFINITION_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist. Create a project with "
                                f"`python -m common_utils project init {path.parent}`.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise DefinitionError(f"{path}: not valid YAML ({error})") from None
    definition = parse_definition(raw, str(path))
    return TaskDefinition(**{**definition.__dict__, "path": path.resolve()})


DEFINITION_TEMPLATE = """\
# task_definition.yaml: what this project promises before any training starts (Lab-4.3).
name: my-classifier
description: One sentence on what the model does and for whom.
languages: [en]
labels: [positive, negative, neutral]   # single lower-case words: the model answers one of them
input:
  field: text                           # the JSONL field the model reads
  description: one short message written by a user
output:
  field: label                          # the JSONL field holding the answer (one of labels)
  description: exactly one label word
instruction: "Classify the message. Answer with one word: {labels}."
metric: macro_f1                        # macro_f1 (every class counts the same) or accuracy
threshold: 0.80                         # the evaluation report passes when metric >= threshold
data_dir: data                          # train.jsonl, valid.jsonl, test.jsonl, relative to this file
license: apache-2.0
"""

README_TEMPLATE = """\
# {name}

A fine-tuning project scaffolded by `python -m common_utils project init`.

1. Edit `task_definition.yaml`: labels, instruction, metric, threshold.
2. Put `train.jsonl`, `valid.jsonl`, `test.jsonl` in `data/`, one JSON object per line:
   `{{"id": "train-0001", "text": "...", "label": "positive"}}`.
3. Check them: `python -m common_utils project validate {folder}`.
4. Train, evaluate, merge, serve and publish as in Lab-4.3.
"""

EXAMPLE_ROWS = {
    "train": [("train-0001", "I love this, it works perfectly.", "positive"),
              ("train-0002", "It broke after one day.", "negative"),
              ("train-0003", "It arrived on Tuesday.", "neutral")],
    "valid": [("valid-0001", "Great value for the price.", "positive")],
    "test": [("test-0001", "The colour is not what I ordered.", "negative")],
}


def init_project(folder: str | Path, overwrite: bool = False) -> list[Path]:
    """Scaffold a project: task_definition.yaml template, data/ with three example rows per split file,
    README stub. Refuses to overwrite an existing definition unless `overwrite`. Returns the files."""
    import json

    folder = Path(folder)
    definition = folder / DEFINITION_FILE
    if definition.exists() and not overwrite:
        raise FileExistsError(f"{definition} already exists; edit it, or pass --force to start over")
    (folder / "data").mkdir(parents=True, exist_ok=True)
    written = [definition, folder / "README.md"]
    definition.write_text(DEFINITION_TEMPLATE, encoding="utf-8")
    (folder / "README.md").write_text(README_TEMPLATE.format(name=folder.name, folder=folder), encoding="utf-8")
    for split, rows in EXAMPLE_ROWS.items():
        path = folder / "data" / f"{split}.jsonl"
        path.write_text("".join(json.dumps({"id": i, "text": t, "label": y}) + "\n" for i, t, y in rows),
                        encoding="utf-8")
        written.append(path)
    return written
