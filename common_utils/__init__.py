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
    distributed   torchrun launches from a notebook, and the helpers the launched scripts share
    zero_config   DeepSpeed ZeRO stage/offload/micro-batch choice with its per-GPU memory estimate
    zero_memory   what one ZeRO rank holds (measured), the fp32 ZeRO formulas, DeepSpeed/Accelerate configs
    alpaca        Alpaca-format instruction data and prompt template (Lab-1.3)
    adapters      bottleneck adapters (Houlsby/Pfeiffer), which peft lacks
    topic_lm      topic classification as generation with plain Hugging Face APIs (Lab-1.1)
    classify      encoder sequence classification for the NLU PEFT labs (BitFit, P-Tuning) and the comparison
    training_memory  activation bytes, exact gradient accumulation, training-memory estimator
    attention     naive and tiled (online-softmax) attention, attention FLOPs and IO
    gqa           MHA / MQA / GQA attention, K/V head pooling, KV-cache size, a tiny char LM
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
    "peft_methods": ["PEFT_METHODS", "register_method", "get_method", "make_peft_config", "apply_peft", "lora_param_formula", "is_quantized",
                     "trainable_param_formula", "prefix_kv_dim", "default_learning_rate", "ia3_scales",
                     "PROMPT_TOKENS", "PROMPT_INIT_TEXT", "PREFIX_TOKENS"],
    "adapters": ["AdapterConfig", "add_adapters", "has_adapters", "save_adapters", "load_adapters", "is_adapter_dir", "adapter_param_formula"],
    "data": ["DATASET_SCHEMAS", "DatasetFormatError", "validate_jsonl", "load_course_dataset",
             "extraction_messages", "to_prompt_completion", "loss_token_table"],
    "train": ["course_sft_config", "make_sft_trainer", "run_sft", "train_sft", "extraction_train_set", "FinetuneRun",
              "finetune_extraction", "ensure_adapter", "loss_history", "loss_reduction"],
    "artifacts": ["save_pretrained_atomic", "atomic_file"],
    "evaluation": ["generate_batch", "parse_json_object", "score_extraction", "perplexity"],
    "monitor": ["ParamCount", "count_parameters", "process_rss_mb", "cuda_peak_mb", "track_peak_memory",
                "Timer", "dir_size_mb", "write_metrics", "read_metrics", "median_seconds"],
    "distributed": ["launch", "ensure_launched", "DistributedLaunchError", "LaunchResult", "init_distributed", "finish_distributed"],
    "zero_config": ["model_state_bytes_per_gpu", "plan_zero", "ZeroPlan", "deepspeed_config"],
    "zero_memory": ["rank_model_states", "fp32_zero_bytes", "overlapping_param_numel", "zero_train_config", "accelerate_deepspeed_yaml", "accelerate_command", "launch_accelerate", "write_zero_configs", "load_zero_checkpoint", "ensure_deepspeed_cpu_comm_op"],
    "alpaca": ["to_alpaca", "alpaca_prompt", "load_alpaca", "alpaca_sft_tensors", "alpaca_eval_loss", "alpaca_generate"],
    "classify": ["CLASSIFY_SIZES", "CLASSIFY_LR", "ClassifierRun", "classify_sizes", "prepare_classifier", "tokenize_split", "course_classify_args", "make_classify_trainer", "predict_labels", "predict_logits", "logits_with_fixed_prompt", "evaluate_classifier", "evaluate_accuracy", "save_trainable", "load_trainable", "load_base_classifier", "finetune_classifier", "ensure_classifier", "label_names"],
    "plots": ["apply_course_style", "plot_loss_curves", "plot_bars", "plot_per_layer_distributions"],
    "topic_lm": ["hf_model_source", "topic_data_files", "topic_labels", "topic_messages", "topic_prompt_completion", "first_word", "topic_accuracy", "topic_lora_config", "topic_sft_config", "train_topic_lora", "ensure_topic_adapter"],
    "training_memory": ["SavedTensorMeter", "causal_lm_batch", "token_loss_sum", "split_batch", "accumulated_gradients", "flat_grad", "relative_error", "MemoryEstimate", "estimate_training_memory", "truncate_layers", "tensor_bytes", "optimizer_state_bytes", "memory_timeline", "plot_memory_timeline", "peak_tensor_memory_mb"],
    "attention": ["naive_attention", "tiled_attention", "AttentionCost", "attention_cost"],
    "gqa": ["GroupedQueryAttention", "pool_kv_heads", "kv_cache_bytes_per_token", "TinyCausalLM", "char_corpus", "train_tiny_lm", "eval_loss", "kv_cache_bytes", "load_or_train_tiny_lm"],
    "alignment": ["DPO_BETA", "ORPO_BETA", "SFT_SHARE", "stage_steps", "judge", "judge_scores", "win_rate", "preference_messages", "preference_pairs", "chosen_sft_set", "dpo_loss", "completion_logps", "reply_logps", "kl_to_reference", "dpo_batch_logps", "orpo_batch_terms", "orpo_loss", "course_dpo_config", "course_orpo_config", "make_dpo_trainer", "make_orpo_trainer", "AlignRun", "load_sft_policy", "train_sft_baseline", "train_preference", "preference_step_cost", "ensure_alignment_adapter"],
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
