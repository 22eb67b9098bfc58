"""One factory for the course's PEFT methods.

Each method is registered once with its family and paper, and either a builder that returns a peft
config or, for methods peft lacks (bottleneck adapters, BitFit), a function that applies the method
to a model itself (`applies_itself=True`). Labs call `apply_peft(model, "lora")`; a new method slots
in with `@register_method(...)` without touching the labs that already exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PeftMethod:
    name: str
    family: str  # additive | selective | reparameterized
    paper: str  # title (authors, year)
    build: Callable[..., Any]  # returns a peft config, or (applies_itself) the wrapped model
    needs_quantized_base: bool = False
    applies_itself: bool = False


PEFT_METHODS: dict[str, PeftMethod] = {}


def register_method(name: str, family: str, paper: str, needs_quantized_base: bool = False,
                    applies_itself: bool = False):
    """Decorator adding a method to PEFT_METHODS.

    The decorated function is `build(**overrides) -> peft config`, or, with applies_itself=True,
    `build(model, **overrides) -> model` for methods peft does not implement."""

    def decorate(build: Callable[..., Any]) -> Callable[..., Any]:
        PEFT_METHODS[name] = PeftMethod(name, family, paper, build, needs_quantized_base, applies_itself)
        return build

    return decorate


@register_method("lora", "reparameterized",
                 "LoRA: Low-Rank Adaptation of Large Language Models (Hu et al., 2021)")
def _lora_config(r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0,
                 target_modules: str | list[str] = "all-linear", task_type: str = "CAUSAL_LM", **extra: Any):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules,
                      task_type=task_type, **extra)


@register_method("qlora", "reparameterized",
                 "QLoRA: Efficient Finetuning of Quantized LLMs (Dettmers et al., 2023)", needs_quantized_base=True)
def _qlora_config(**kwargs: Any):
    """QLoRA = the same LoRA adapters over a frozen 4-bit NF4 base (load it with quantization='4bit')."""
    return _lora_config(**kwargs)


def get_method(method: str) -> PeftMethod:
    """The registered method, or a KeyError listing the available ones."""
    if method not in PEFT_METHODS:
        raise KeyError(f"Unknown PEFT method {method!r}; available: {', '.join(PEFT_METHODS)}")
    return PEFT_METHODS[method]


def _with_profile_defaults(spec: PeftMethod, profile, overrides: dict[str, Any]) -> dict[str, Any]:
    """LoRA-family sizes default to the profile's lora_r / lora_alpha; explicit overrides win."""
    if profile is not None and spec.name in ("lora", "qlora"):
        return {"r": profile.lora_r, "lora_alpha": profile.lora_alpha, **overrides}
    return overrides


def make_peft_config(method: str, profile=None, **overrides: Any):
    """The method's peft config (only for methods peft implements)."""
    spec = get_method(method)
    if spec.applies_itself:
        raise TypeError(f"{method} is not a peft config method; use apply_peft(model, {method!r}).")
    return spec.build(**_with_profile_defaults(spec, profile, overrides))


def lora_param_formula(model, r: int, target_modules: list[str] | None = None) -> int:
    """Trainable parameters LoRA adds, by the paper's formula r * (d_in + d_out) per adapted matrix.

    Default targets match peft's "all-linear": every nn.Linear except the output head. Call it on
    the base model, before apply_peft (LoRA's own A/B matrices are nn.Linear too)."""
    import torch

    output_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is output_head:
            continue
        if target_modules is None or name.rsplit(".", 1)[-1] in target_modules:
            total += r * (module.in_features + module.out_features)
    return total


def is_quantized(model) -> bool:
    """True for a bitsandbytes 4-bit or 8-bit model (QLoRA's base)."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def apply_peft(model, method: str, profile=None, **overrides: Any):
    """Wrap `model` with the method's trainable parameters; everything else is frozen."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    spec = get_method(method)
    if spec.needs_quantized_base and not is_quantized(model):
        raise ValueError(f"{method} trains over a quantized base. Load it with "
                         f"`load_causal_lm(key, quantization='4bit')` first.")
    if is_quantized(model):
        # fp32 norms/embeddings for stable training; no gradient checkpointing at course sizes (slower)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if spec.applies_itself:
        return spec.build(model, **_with_profile_defaults(spec, profile, overrides))
    return get_peft_model(model, make_peft_config(method, profile, **overrides))


# --- NLU methods of the encoder labs (Lab-06 BitFit, Lab-07 P-Tuning, Lab-08 P-Tuning v2) ---


@register_method("bitfit", "selective",
                 "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked "
                 "Language-models (Ben Zaken et al., 2021)", applies_itself=True)
def _bitfit(model, train_head: bool = True, **extra: Any):
    """Freeze every weight except the bias terms; the model is returned unwrapped (peft has no BitFit).

    train_head=True also trains the new classification head, as the paper does: a freshly initialised
    head is random, so without it the biases would have to steer a random projection. Set it False to
    measure bias-only tuning on its own."""
    if extra:
        raise TypeError(f"bitfit takes only train_head; got {', '.join(extra)}")
    head_prefixes = ("classifier.", "score.")
    biases = 0
    for name, parameter in model.named_parameters():
        is_bias = name.endswith(".bias")
        biases += is_bias
        parameter.requires_grad = is_bias or (train_head and name.startswith(head_prefixes))
    if biases == 0:
        raise ValueError(f"{type(model).__name__} has no bias terms, so BitFit has nothing to train "
                         f"(Llama-style models such as SmolLM2 are bias-free). Use an encoder such as "
                         f"load_encoder('minilm-l6-v2', num_labels=N).")
    return model


@register_method("p_tuning", "additive", "GPT Understands, Too (Liu et al., 2021)")
def _p_tuning_config(num_virtual_tokens: int = 10, encoder_reparameterization_type: str = "MLP",
                     encoder_hidden_size: int = 128, task_type: str = "SEQ_CLS", **extra: Any):
    """Continuous prompt produced by a small prompt encoder (MLP by default, or "LSTM") over trainable
    embeddings; at inference its output is a fixed prompt, so the encoder can be dropped."""
    from peft import PromptEncoderConfig

    return PromptEncoderConfig(num_virtual_tokens=num_virtual_tokens,
                               encoder_reparameterization_type=encoder_reparameterization_type,
                               encoder_hidden_size=encoder_hidden_size, task_type=task_type, **extra)


@register_method("p_tuning_v2", "additive",
                 "P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning Universally Across Scales "
                 "and Tasks (Liu et al., 2022)")
def _p_tuning_v2_config(num_virtual_tokens: int = 10, task_type: str = "SEQ_CLS", **extra: Any):
    """Deep prompts: trainable key/value prefixes at every layer, without the reparameterization MLP
    (the paper drops it for NLU). peft implements this as PrefixTuningConfig(prefix_projection=False)."""
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(num_virtual_tokens=num_virtual_tokens, prefix_projection=False,
                              task_type=task_type, **extra)
