"""common_utils: the one shared package every notebook of the course imports.

Importing it is cheap and silent: submodules (and torch, transformers, bitsandbytes behind them)
load on first use, so `from common_utils import get_profile` does not pay for the whole stack.

Rooms:
    runtime       profile (smoke/full), device and dtype choice, seeding, threads
    models        model registry, provisioning of the embedded offline models, loading
    peft_methods  one factory for the course's PEFT methods
    data          course datasets, validation, chat formatting, loss-token inspection
    train         thin wrappers over TRL's SFTTrainer with course defaults
    evaluation    batched generation, exact match, JSON validity, perplexity
    monitor       memory (RSS, CUDA peak), timers, parameter counts, metrics files
    plots         the course chart style and shared charts
    artifacts     atomic saves of models, adapters and tokenizers
    alignment     preference data, the rule-based judge, DPO/ORPO recipes
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "runtime": ["Profile", "get_profile", "get_device", "bf16_supported", "pick_dtype", "seed_everything",
                "set_threads", "describe_runtime"],
    "models": ["MODEL_REGISTRY", "ModelSpec", "ModelNotProvisionedError", "provision", "model_path",
               "load_tokenizer", "load_causal_lm", "load_encoder"],
    "peft_methods": ["PEFT_METHODS", "register_method", "get_method", "make_peft_config", "apply_peft", "lora_param_formula", "is_quantized"],
    "data": ["DATASET_SCHEMAS", "DatasetFormatError", "validate_jsonl", "load_course_dataset",
             "extraction_messages", "to_prompt_completion", "loss_token_table"],
    "train": ["course_sft_config", "make_sft_trainer", "run_sft", "train_sft", "extraction_train_set", "FinetuneRun",
              "finetune_extraction", "ensure_adapter", "loss_history", "loss_reduction"],
    "artifacts": ["save_pretrained_atomic"],
    "evaluation": ["generate_batch", "parse_json_object", "score_extraction", "perplexity"],
    "monitor": ["ParamCount", "count_parameters", "process_rss_mb", "cuda_peak_mb", "track_peak_memory",
                "Timer", "dir_size_mb", "write_metrics", "read_metrics"],
    "plots": ["apply_course_style", "plot_loss_curves", "plot_bars"],
    "alignment": ["DPO_BETA", "ORPO_BETA", "judge", "judge_scores", "win_rate", "preference_messages", "preference_pairs", "chosen_sft_set", "dpo_loss", "completion_logps", "reply_logps", "kl_to_reference", "course_dpo_config", "course_orpo_config", "make_dpo_trainer", "make_orpo_trainer", "preference_history", "AlignRun", "load_sft_policy", "train_sft_baseline", "train_preference", "ensure_alignment_adapter"],
}
_NAME_TO_MODULE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_NAME_TO_MODULE)


def __getattr__(name: str) -> Any:
    module = _NAME_TO_MODULE.get(name)
    if module is None:
        raise AttributeError(f"module 'common_utils' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
