"""common_utils: the one shared package every notebook of the course imports.

Importing it is cheap and silent: rooms (and torch, transformers, bitsandbytes behind them) load on
first use, so `from common_utils import get_profile` does not pay for the whole stack.

The facade below holds the few names nearly every notebook uses; everything else is imported from
its room, e.g. `from common_utils.training.sft import finetune_extraction`. Rooms, bottom to top
(a room imports only rooms above it in this list; tests/test_architecture.py checks it):

    core         runtime (profile, lab sizes, device), models, artifacts + ensure, generation, monitor,
                 plots, processes
    data         dataset registry, JSONL validation, loading, loss-token inspection
    tasks        extraction, topic, preference (+ judge), alpaca, multiple_choice, tickets, web_corpus: data
                 formats and scorers per task
    reference    code taught in notebooks, exported by scripts/export_reference.py (`#@save`)
    peft         the PEFT method factory and bottleneck adapters
    training     sft, preference, classify, distributed, deepspeed, memory
    evaluation   perplexity, classification metrics (macro-F1, confusion matrix), the lm_eval harness glue
    inference    chapter 02: prompts, timing, traces, the course server and its client side
    compression  chapter 03: calibration data and input statistics
    project      chapter 04's capstone: task definition, data validation, training, report, serving, card
"""

from __future__ import annotations

import importlib
from typing import Any

from common_utils.core.noise import silence_known_noise

silence_known_noise()

__version__ = "0.2.0"

_FACADE = {
    "common_utils.core.artifacts": ["atomic_file", "ensure", "save_pretrained_atomic"],
    "common_utils.core.generation": ["generate_batch"],
    "common_utils.core.models": ["load_causal_lm", "load_encoder", "load_tokenizer", "model_path"],
    "common_utils.core.monitor": ["Timer", "count_parameters", "dir_size_mb", "median_seconds", "process_rss_mb", "read_metrics", "track_peak_memory", "write_metrics"],
    "common_utils.core.plots": ["apply_course_style", "plot_bars", "plot_loss_curves"],
    "common_utils.core.processes": ["launch"],
    "common_utils.core.runtime": ["get_device", "get_profile", "lab_sizes", "pick_dtype", "seed_everything", "set_threads"],
    "common_utils.data": ["load_course_dataset", "loss_token_table"],
    "common_utils.peft.methods": ["apply_peft", "make_peft_config"],
    "common_utils.tasks.extraction": ["extraction_messages", "parse_json_object", "score_extraction"],
    "common_utils.training.sft": ["loss_history", "loss_reduction"],
}
_NAME_TO_MODULE = {name: module for module, names in _FACADE.items() for name in names}
__all__ = sorted(_NAME_TO_MODULE)


def __getattr__(name: str) -> Any:
    module = _NAME_TO_MODULE.get(name)
    if module is None:
        raise AttributeError(f"module 'common_utils' has no attribute {name!r}: import it from its room "
                             f"(see `help(common_utils)`), e.g. `from common_utils.training.sft import ...`")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
