"""Glue for lm-evaluation-harness (`lm_eval`) with local course data: no hub, no network.

What Lab-4.1 (and any later lab that wants a harness number) needs and lm_eval leaves to the user:
* write a task YAML that reads a local JSONL (`dataset_path: json` + `data_files`), either a
  multiple-choice task in the C-Eval column format (`question, A, B, C, D, answer`) or a
  `generate_until` task with a `process_results` function in a `utils.py` beside the YAML;
* run `lm_eval.simple_evaluate` offline on a local model folder (optionally with a PEFT adapter),
  with lm_eval's INFO logging turned down (warnings and errors still show);
* read back the aggregate metric with its standard error and the per-item results from `log_samples`
  (log-likelihood per choice, prediction, the prompt lm_eval actually built).

The scoring itself (log-likelihood per choice, argmax, statistics) is what the lab teaches, in its cells.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common_utils.tasks.multiple_choice import CLOZE_TEMPLATE, LETTERS

MC_TASK = "course_mc"
# The cloze template of common_utils.tasks.multiple_choice, as the Jinja lm_eval renders.
MC_DOC_TO_TEXT = CLOZE_TEMPLATE.replace("{question}", "{{question}}")
MC_DOC_TO_CHOICE = "{{[" + ", ".join(LETTERS) + "]}}"
MC_DOC_TO_TARGET = "{{" + json.dumps(list(LETTERS)) + ".index(answer)}}"


def _yaml_str(value: str) -> str:
    """A YAML scalar for any string (JSON strings are valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def _data_files(files: dict[str, str | Path]) -> str:
    for split, path in files.items():
        if not Path(path).exists():
            raise FileNotFoundError(f"{split} split {path} does not exist. Rebuild the course data: "
                                    "`python datasets/build_datasets.py`.")
    return "\n".join(f"    {split}: {_yaml_str(str(Path(path).resolve()))}" for split, path in files.items())


def _write_task_yaml(task_dir: str | Path, task: str, files: dict[str, str | Path], body: str,
                     metrics: tuple[str, ...]) -> Path:
    """Write `task_dir/<task>.yaml` atomically: the local-JSONL dataset block, the task-specific `body`,
    the mean-aggregated `metrics` and the version every course task shares."""
    from common_utils.core.artifacts import atomic_file

    metric_list = "".join(f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true\n" for m in metrics)
    text = (f"task: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n{_data_files(files)}\n"
            f"test_split: test\n{body}metric_list:\n{metric_list}metadata:\n  version: 1.0\n")
    path = Path(task_dir) / f"{task}.yaml"
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_mc_task(task_dir: str | Path, test_file: str | Path, dev_file: str | Path | None = None,
                  task: str = MC_TASK) -> Path:
    """Write `task_dir/<task>.yaml`: a local multiple-choice task over C-Eval-format JSONL.

    Cloze scoring: the prompt is CLOZE_TEMPLATE, the four continuations are the option texts (so lm_eval
    reports acc, acc_norm by characters and acc_bytes by UTF-8 bytes). Few-shot exemplars, when
    `num_fewshot` is passed to `run_harness`, are the first rows of `dev_file` (sampler `first_n`)."""
    files = {"test": test_file, **({"dev": dev_file} if dev_file is not None else {})}
    fewshot = "fewshot_split: dev\nfewshot_config:\n  sampler: first_n\n" if dev_file is not None else ""
    body = (f"{fewshot}output_type: multiple_choice\n"
            f"doc_to_text: {_yaml_str(MC_DOC_TO_TEXT)}\ndoc_to_choice: {_yaml_str(MC_DOC_TO_CHOICE)}\n"
            f"doc_to_target: {_yaml_str(MC_DOC_TO_TARGET)}\n")
    return _write_task_yaml(task_dir, task, files, body, ("acc", "acc_norm", "acc_bytes"))


EXTRACTION_UTILS = '''"""process_results of the course extraction task: strict JSON exact match (written by
common_utils.evaluation.harness.write_generation_task)."""
from common_utils.tasks.extraction import score_extraction


def process_results(doc, results):
    scores = score_extraction([results[0]], [doc["output"]])
    return {"exact_match": scores["exact_match"], "json_valid": scores["json_valid"]}
'''


def write_generation_task(task_dir: str | Path, test_file: str | Path, task: str = "course_extraction",
                          doc_to_text: str = "{{input}}", max_gen_toks: int = 40,
                          utils_source: str = EXTRACTION_UTILS, metrics: tuple[str, ...] = ("exact_match", "json_valid")) -> Path:
    """Write `task_dir/<task>.yaml` (a `generate_until` task over a local JSONL, greedy) and the
    `utils.py` beside it whose `process_results(doc, results)` scores one reply (default: the course
    extraction task's strict JSON exact match). Run it with `apply_chat_template=True` and the task's
    instruction as `system_instruction`, so the prompt is the chat the model was fine-tuned on."""
    from common_utils.core.artifacts import atomic_file

    with atomic_file(Path(task_dir) / "utils.py") as tmp:
        tmp.write_text(utils_source, encoding="utf-8")
    body = (f"output_type: generate_until\ndoc_to_text: {_yaml_str(doc_to_text)}\n"
            f"doc_to_target: \"{{{{output}}}}\"\ngeneration_kwargs:\n  until: [\"<|im_end|>\"]\n"
            f"  max_gen_toks: {max_gen_toks}\n  do_sample: false\n"
            f"process_results: !function utils.process_results\n")
    return _write_task_yaml(task_dir, task, {"test": test_file}, body, metrics)


@contextmanager
def quiet_lm_eval(level: int = logging.WARNING):
    """lm_eval logs every step at INFO; keep WARNING and above (errors are never hidden)."""
    loggers = [logging.getLogger(name) for name in ("lm_eval", "lm-eval")]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, previous):
            logger.setLevel(old)


def run_harness(task_dir: str | Path, tasks: list[str], pretrained: str | Path, peft: str | Path | None = None,
                num_fewshot: int | None = None, limit: int | None = None, batch_size: int = 16,
                dtype: str = "float32", device: str | None = None, apply_chat_template: bool = False,
                system_instruction: str | None = None, seed: int = 1234, verbose: bool = False) -> dict[str, Any]:
    """`lm_eval.simple_evaluate` with `model="hf"` on a local model folder (plus a PEFT adapter folder),
    tasks found in `task_dir` (`TaskManager(include_path=...)`), per-item samples logged.

    `limit` takes the first rows of the test split. Returns lm_eval's results dict.

    Only the tasks in `task_dir` are indexed (`include_defaults=False`): indexing the thousands of task
    YAMLs lm_eval ships took 12 s per call on a 2-core CPU, more than scoring 20 items. The hub tasks
    (C-Eval, CMMLU, TMMLU+) go through `lm_eval.simple_evaluate` with its default task manager."""
    from common_utils.core.runtime import get_device

    import lm_eval
    from lm_eval.tasks import TaskManager

    model_args = f"pretrained={pretrained},dtype={dtype}" + (f",peft={peft}" if peft else "")
    with quiet_lm_eval(logging.INFO if verbose else logging.WARNING):
        return lm_eval.simple_evaluate(
            model="hf", model_args=model_args, tasks=tasks, num_fewshot=num_fewshot, limit=limit,
            batch_size=batch_size, device=device or str(get_device()), log_samples=True,
            task_manager=TaskManager(include_path=str(task_dir), include_defaults=False), apply_chat_template=apply_chat_template,
            system_instruction=system_instruction, bootstrap_iters=100, random_seed=seed, numpy_random_seed=seed,
            torch_random_seed=seed, fewshot_random_seed=seed)


def task_metric(results: dict[str, Any], task: str, metric: str = "acc") -> tuple[float, float | None]:
    """(value, standard error) of one metric as lm_eval aggregated it (filter `none`)."""
    row = results["results"][task]
    key = f"{metric},none"
    if key not in row:
        raise KeyError(f"{task} has no metric {metric!r}; it reported {sorted(k for k in row if ',' in k)}")
    stderr = row.get(f"{metric}_stderr,none")
    return float(row[key]), (float(stderr) if isinstance(stderr, (int, float)) else None)


def mc_samples(results: dict[str, Any], task: str = MC_TASK) -> list[dict[str, Any]]:
    """Per-item multiple-choice results from `log_samples`, sorted by doc_id: the doc, the prompt lm_eval
    built, the log-likelihood of every choice, the argmax prediction, the gold index and `acc`."""
    rows = []
    for sample in sorted(results["samples"][task], key=lambda s: s["doc_id"]):
        loglikelihoods = [float(resp[0]) for resp in sample["filtered_resps"]]
        rows.append({"doc_id": sample["doc_id"], "id": sample["doc"].get("id"), "prompt": sample["arguments"][0][0],
                     "continuations": [args[1] for args in sample["arguments"]], "loglikelihoods": loglikelihoods,
                     "pred": max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__),
                     "gold": int(sample["target"]), "acc": float(sample["acc"])})
    return rows


def generation_samples(results: dict[str, Any], task: str) -> list[dict[str, Any]]:
    """Per-item generate_until results from `log_samples`, sorted by doc_id: the prompt, the reply and
    the metrics `process_results` returned for it."""
    rows = []
    for sample in sorted(results["samples"][task], key=lambda s: s["doc_id"]):
        reply = sample["filtered_resps"][0]
        rows.append({"doc_id": sample["doc_id"], "prompt": sample["arguments"][0][0],
                     "reply": reply if isinstance(reply, str) else reply[0],
                     **{k: v for k, v in sample.items() if k in ("exact_match", "json_valid")}})
    return rows
