"""common_utils.evaluation.harness: lm_eval task YAMLs for local JSONL, metric and sample extraction."""

from __future__ import annotations

import json
from pathlib import Path

from common_utils.data import datasets_dir
from common_utils.evaluation.harness import (
    MC_TASK,
    generation_samples,
    mc_samples,
    task_metric,
    write_generation_task,
    write_mc_task,
)
from common_utils.tasks.multiple_choice import cloze_prompt

import pytest
import yaml

MC = datasets_dir() / "multiple_choice"


class _Loader(yaml.SafeLoader):
    """Reads lm_eval YAML: `!function module.name` becomes a plain string."""


_Loader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def _load(path: Path) -> dict:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (SafeLoader subclass)


def test_mc_task_yaml_reads_local_files_and_renders_the_cloze_prompt(tmp_path: Path) -> None:
    import jinja2

    config = _load(write_mc_task(tmp_path, MC / "test.jsonl", MC / "dev.jsonl"))
    assert config["task"] == MC_TASK and config["dataset_path"] == "json"
    assert Path(config["dataset_kwargs"]["data_files"]["test"]).is_absolute()
    assert config["fewshot_split"] == "dev" and config["fewshot_config"]["sampler"] == "first_n"
    assert config["output_type"] == "multiple_choice"
    assert [m["metric"] for m in config["metric_list"]] == ["acc", "acc_norm", "acc_bytes"]
    row = json.loads((MC / "test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    render = lambda template: jinja2.Template(template).render(**row)  # noqa: E731
    assert render(config["doc_to_text"]) == cloze_prompt(row)  # the YAML and the notebook use one template
    assert render(config["doc_to_choice"]) == str([row[x] for x in "ABCD"])
    assert int(render(config["doc_to_target"])) == "ABCD".index(row["answer"])


def test_generation_task_writes_utils_with_process_results(tmp_path: Path) -> None:
    config = _load(write_generation_task(tmp_path, datasets_dir() / "person_extraction" / "test.jsonl",
                                         max_gen_toks=12))
    assert config["output_type"] == "generate_until"
    assert config["process_results"] == "!function utils.process_results"
    assert config["generation_kwargs"] == {"until": ["<|im_end|>"], "max_gen_toks": 12, "do_sample": False}
    namespace: dict = {}
    exec((tmp_path / "utils.py").read_text(encoding="utf-8"), namespace)  # noqa: S102 (our own generated file)
    doc = {"output": json.dumps({"name": "A", "age": 3, "city": "B"})}
    assert namespace["process_results"](doc, ['{"city": "B", "name": "A", "age": 3}']) == {"exact_match": 1.0, "json_valid": 1.0}
    assert namespace["process_results"](doc, ["A, 3, B"]) == {"exact_match": 0.0, "json_valid": 0.0}


def test_missing_data_file_says_how_to_rebuild(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="build_datasets.py"):
        write_mc_task(tmp_path, tmp_path / "nope.jsonl")


def _fake_results() -> dict:
    doc = {"id": "test-0001", "question": "q", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "B"}
    mc = [{"doc_id": 1, "doc": doc, "target": 1, "acc": 1.0,
           "arguments": [["Question: q\nAnswer:", f" {x}"] for x in "abcd"],
           "filtered_resps": [[-3.0, False], [-1.0, True], [-2.0, False], [-4.0, False]]},
          {"doc_id": 0, "doc": {**doc, "id": "test-0000"}, "target": 0, "acc": 0.0,
           "arguments": [["Question: q\nAnswer:", f" {x}"] for x in "abcd"],
           "filtered_resps": [[-3.0, False], [-1.0, True], [-2.0, False], [-4.0, False]]}]
    gen = [{"doc_id": 0, "arguments": [["<chat>", {"until": []}]], "filtered_resps": ["{}"], "exact_match": 0.0,
            "json_valid": 1.0}]
    return {"results": {MC_TASK: {"acc,none": 0.5, "acc_stderr,none": 0.5, "alias": MC_TASK},
                        "gen": {"exact_match,none": 0.0, "exact_match_stderr,none": "N/A"}},
            "samples": {MC_TASK: mc, "gen": gen}}


def test_task_metric_and_samples() -> None:
    results = _fake_results()
    assert task_metric(results, MC_TASK) == (0.5, 0.5)
    assert task_metric(results, "gen", "exact_match") == (0.0, None)
    with pytest.raises(KeyError, match="acc"):
        task_metric(results, MC_TASK, "f1")
    rows = mc_samples(results)
    assert [r["id"] for r in rows] == ["test-0000", "test-0001"]  # sorted by doc_id
    assert rows[0]["pred"] == 1 and rows[0]["gold"] == 0 and rows[0]["loglikelihoods"] == [-3.0, -1.0, -2.0, -4.0]
    assert rows[0]["continuations"] == [" a", " b", " c", " d"]
    assert generation_samples(results, "gen") == [{"doc_id": 0, "prompt": "<chat>", "reply": "{}", "exact_match": 0.0,
                                                    "json_valid": 1.0}]


@pytest.mark.slow
def test_harness_runs_offline_on_the_course_model(tmp_path: Path) -> None:
    """lm_eval end to end on 4 items: accuracy equals the mean of the per-item `acc`."""
    from common_utils.core.models import model_path
    from common_utils.evaluation.harness import run_harness

    write_mc_task(tmp_path, MC / "test.jsonl", MC / "dev.jsonl")
    results = run_harness(tmp_path, [MC_TASK], model_path("smollm2-135m-instruct"), num_fewshot=1, limit=4,
                          batch_size=8, device="cpu")
    rows = mc_samples(results)
    assert len(rows) == 4 and rows[0]["prompt"].count("Question:") == 2
    assert task_metric(results, MC_TASK)[0] == pytest.approx(sum(r["acc"] for r in rows) / 4)
