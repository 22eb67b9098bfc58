"""One factory for the course's PEFT methods.

Each method is registered once with its family and paper, and either a builder that returns a peft
config or, for methods peft lacks (bottleneck adapters, BitFit), a function that applies the method
to a model itself (`applies_itself=True`). Labs call `apply_peft(model, "lora")`; a new method slots
in with `@register_method(...)` without touching the labs that already exist.
"""

from __future__ import annotations

import re
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


# Defaults of the methods below; the formulas in trainable_param_formula use the same ones.
PROMPT_TOKENS = 20
# Text initialisation of the course's soft prompts: a description of the extraction task.
PROMPT_INIT_TEXT = "Extract the person's name, age and city from the sentence as a JSON object."
PREFIX_TOKENS = 10
ADAPTER_BOTTLENECK = 16
# (IA)^3 scales keys, values and the feed-forward activation entering the FFN's output projection.
# peft's own BERT default ("output.dense") also hits attention.output.dense, so targets are explicit.
IA3_TARGETS: dict[str, tuple[str, str]] = {  # model_type -> (target_modules, feedforward_modules) regexes
    "llama": (r".*\.(self_attn\.(k_proj|v_proj)|mlp\.down_proj)", r".*\.mlp\.down_proj"),
    "bert": (r".*\.(attention\.self\.(key|value)|layer\.\d+\.output\.dense)", r".*\.layer\.\d+\.output\.dense"),
}


@register_method("adapter", "additive",
                 "Parameter-Efficient Transfer Learning for NLP (Houlsby et al., 2019)", applies_itself=True)
def _adapter(model, bottleneck: int = ADAPTER_BOTTLENECK, placement: str = "houlsby", non_linearity: str = "relu",
             task_type: str = "CAUSAL_LM"):
    """Bottleneck adapters after attention and FFN outputs (placement='pfeiffer': FFN only); see adapters.py."""
    from common_utils.peft.adapters import AdapterConfig, add_adapters

    return add_adapters(model, AdapterConfig(bottleneck, placement, non_linearity, task_type))


@register_method("prompt_tuning", "additive",
                 "The Power of Scale for Parameter-Efficient Prompt Tuning (Lester et al., 2021)")
def _prompt_tuning_config(num_virtual_tokens: int = PROMPT_TOKENS, init_text: str | None = None,
                          tokenizer_name_or_path: str | None = None, task_type: str = "CAUSAL_LM", **extra: Any):
    """Soft prompt of num_virtual_tokens embeddings; init_text starts it from that text's token embeddings
    (random otherwise). apply_peft fills tokenizer_name_or_path from the model for text init."""
    from peft import PromptTuningConfig, PromptTuningInit

    if init_text is None:
        return PromptTuningConfig(num_virtual_tokens=num_virtual_tokens, task_type=task_type,
                                  prompt_tuning_init=PromptTuningInit.RANDOM, **extra)
    if tokenizer_name_or_path is None:
        raise ValueError("Text initialisation needs the tokenizer: pass tokenizer_name_or_path "
                         "(apply_peft fills it from the model).")
    return PromptTuningConfig(num_virtual_tokens=num_virtual_tokens, task_type=task_type,
                              prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=init_text,
                              tokenizer_name_or_path=str(tokenizer_name_or_path), **extra)


@register_method("prefix_tuning", "additive",
                 "Prefix-Tuning: Optimizing Continuous Prompts for Generation (Li and Liang, 2021)")
def _prefix_tuning_config(num_virtual_tokens: int = PREFIX_TOKENS, prefix_projection: bool = True,
                          encoder_hidden_size: int | None = None, task_type: str = "CAUSAL_LM", **extra: Any):
    """Trainable key/value prefixes in every layer; prefix_projection=True reparameterises them through
    an MLP (the paper's trick for stable training), dropped after training."""
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(num_virtual_tokens=num_virtual_tokens, prefix_projection=prefix_projection,
                              encoder_hidden_size=encoder_hidden_size, task_type=task_type, **extra)


@register_method("ia3", "additive",
                 "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning "
                 "(Liu et al., 2022)")
def _ia3_config(target_modules: str | list[str] | None = None, feedforward_modules: str | list[str] | None = None,
                task_type: str = "CAUSAL_LM", **extra: Any):
    """Learned vectors rescaling keys, values and FFN activations; apply_peft picks targets by model type."""
    from peft import IA3Config

    return IA3Config(target_modules=target_modules, feedforward_modules=feedforward_modules, task_type=task_type,
                     **extra)


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


# Learning rate of each method relative to the profile's (tuned for LoRA): soft prompts and (IA)^3
# vectors move the model through very few parameters and need larger steps. Measured on the smoke
# profile (12 steps, batch 4): ia3 x10 (lr 1e-2: loss 0.302 -> 0.012, exact match 0.975);
# prompt_tuning x30 (lr 3e-2, text init: loss 0.257 -> 0.101, exact match 0.900; Lester et al., 2021
# train soft prompts at lr 0.3); prefix_tuning x5 is a starting point, not yet calibrated.
LR_MULTIPLIER: dict[str, float] = {"prompt_tuning": 30.0, "prefix_tuning": 5.0, "ia3": 10.0, "adapter": 1.0}


def default_learning_rate(method: str, profile) -> float:
    """The profile's learning rate scaled for `method` (LR_MULTIPLIER; 1 for methods not listed)."""
    return profile.learning_rate * LR_MULTIPLIER.get(method, 1.0)


def make_peft_config(method: str, profile=None, model=None, **overrides: Any):
    """The method's peft config (only for methods peft implements): the course's recipe for it.

    With `model`, the defaults that depend on the model are filled in as apply_peft fills them ((IA)^3
    targets by model type, the tokenizer of a text-initialised soft prompt), so a notebook that writes
    its config by hand can check it equals the recipe a later stage rebuilds with."""
    spec = get_method(method)
    if spec.applies_itself:
        raise TypeError(f"{method} is not a peft config method; use apply_peft(model, {method!r}).")
    if model is not None:
        overrides = _with_model_defaults(method, model, overrides)
    return spec.build(**_with_profile_defaults(spec, profile, overrides))


# peft's PeftType value -> the course's method name (the inverse of the builders above)
PEFT_TYPE_METHODS: dict[str, str] = {"LORA": "lora", "PROMPT_TUNING": "prompt_tuning", "PREFIX_TUNING": "prefix_tuning",
                                     "IA3": "ia3", "P_TUNING": "p_tuning"}


def method_of(config) -> str:
    """The course's method name of a config object: "adapter" for an AdapterConfig, else from the peft
    config's peft_type (a PrefixTuningConfig is "prefix_tuning"); "qlora" is LoRA on a 4-bit base."""
    from common_utils.peft.adapters import AdapterConfig

    if isinstance(config, AdapterConfig):
        return "adapter"
    peft_type = getattr(getattr(config, "peft_type", None), "value", None)
    if peft_type not in PEFT_TYPE_METHODS:
        raise TypeError(f"{type(config).__name__} is not a config the course knows (peft_type={peft_type!r}); "
                        f"known: AdapterConfig and peft configs of types {sorted(PEFT_TYPE_METHODS)}")
    return PEFT_TYPE_METHODS[peft_type]


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


def apply_peft(model, method, profile=None, **overrides: Any):
    """Wrap `model` with the method's trainable parameters; everything else is frozen.

    `method` is a registered name ("lora", "ia3", ...; sizes from `profile`, `overrides` win) or a
    config written out by hand: a peft config (`IA3Config(...)`) or an `AdapterConfig`. The config
    object is copied first, because peft fills fields of the config it is given."""
    import copy

    from peft import get_peft_model, prepare_model_for_kbit_training

    if not isinstance(method, str):
        if overrides:
            raise TypeError(f"pass either a config object or overrides, not both (got {', '.join(overrides)})")
        return _apply_config(model, copy.deepcopy(method))
    spec = get_method(method)
    if spec.needs_quantized_base and not is_quantized(model):
        raise ValueError(f"{method} trains over a quantized base. Load it with "
                         f"`load_causal_lm(key, quantization='4bit')` first.")
    if is_quantized(model):
        # fp32 norms/embeddings for stable training; no gradient checkpointing at course sizes (slower)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if spec.applies_itself:
        return spec.build(model, **_with_profile_defaults(spec, profile, overrides))
    return get_peft_model(model, make_peft_config(method, profile, model=model, **overrides))


def _apply_config(model, config):
    """apply_peft for a config object: bottleneck adapters insert themselves, peft wraps the rest."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if method_of(config) == "adapter":
        from common_utils.peft.adapters import add_adapters

        return add_adapters(model, config)
    if is_quantized(model):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, config)


def ia3_scales(model) -> dict[str, list]:
    """The learned (IA)^3 vectors of a peft model, per target (e.g. k_proj, v_proj, down_proj), in layer
    order: `{"k_proj": [layer0 vector, layer1 vector, ...]}` as 1-D CPU tensors."""
    scales: dict[str, list[tuple[int, Any]]] = {}
    for name, parameter in model.named_parameters():
        if ".ia3_l." not in name:
            continue
        module = name.split(".ia3_l.")[0]
        layer = int(re.search(r"\.(\d+)\.", module).group(1))
        scales.setdefault(module.rsplit(".", 1)[-1], []).append((layer, parameter.detach().float().flatten().cpu()))
    if not scales:
        raise ValueError("No (IA)^3 vectors in this model: apply_peft(model, 'ia3') or load an IA3 adapter first.")
    return {target: [vector for _, vector in sorted(pairs, key=lambda pair: pair[0])] for target, pairs in scales.items()}


def _model_type(model) -> str | None:
    return getattr(getattr(model, "config", None), "model_type", None)


def _with_model_defaults(method: str, model, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults that depend on the model: IA3 targets by model type, the tokenizer for text-initialised prompts."""
    if method == "ia3" and overrides.get("target_modules") is None:
        if _model_type(model) not in IA3_TARGETS:
            raise ValueError(f"No (IA)^3 defaults for model_type={_model_type(model)!r}; pass target_modules and "
                             f"feedforward_modules (known: {sorted(IA3_TARGETS)}).")
        targets, feedforward = IA3_TARGETS[_model_type(model)]
        return {"target_modules": targets, "feedforward_modules": feedforward, **overrides}
    if method == "prompt_tuning" and overrides.get("init_text") and not overrides.get("tokenizer_name_or_path"):
        return {**overrides, "tokenizer_name_or_path": model.name_or_path}
    return overrides


def _matches(name: str, targets: str | list[str]) -> bool:
    """peft's rule: a string is a full-match regex, a list matches module names or their last parts."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith(f".{t}") for t in targets)


def _head_params(model, task_type: str) -> int:
    """SEQ_CLS trains the new classifier head too (peft's modules_to_save)."""
    if task_type != "SEQ_CLS":
        return 0
    return sum(p.numel() for name, child in model.named_children() if name in ("classifier", "score")
               for p in child.parameters())


def prefix_kv_dim(model) -> int:
    """Width of one layer's key (or value) prefix: num_key_value_heads * head_dim with grouped-query
    attention (SmolLM2: 3 * 64 = 192), else hidden_size."""
    config = model.config
    if getattr(config, "num_key_value_heads", None):
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return config.num_key_value_heads * head_dim
    return config.hidden_size


def trainable_param_formula(method: str, model, **cfg: Any) -> int:
    """Trainable parameters `apply_peft(model, method, **cfg)` adds, from each paper's formula.
    Call it on the base model, before apply_peft. With d = hidden size, L = layers, n = virtual tokens:

    * lora:          r * (d_in + d_out) per adapted matrix
    * adapter:       2*d*m + d + m per adapter (m = bottleneck); Houlsby 2 per layer, Pfeiffer 1
    * prompt_tuning: n * d
    * prefix_tuning: n * 2*L*d_kv without projection; with it n*d_kv + (d_kv*h + h) + (h*2*L*d_kv + 2*L*d_kv),
                     h = encoder_hidden_size (default d_kv), d_kv = prefix_kv_dim(model)
    * ia3:           one scale per output feature of k/v, per input feature of the FFN output projection
    SEQ_CLS (task_type="SEQ_CLS") adds the classifier head's parameters."""
    import torch

    task_type = cfg.get("task_type", "CAUSAL_LM")
    if method in ("lora", "qlora"):
        return lora_param_formula(model, cfg.get("r", 8), cfg.get("target_modules")) + _head_params(model, task_type)
    if method == "adapter":
        from common_utils.peft.adapters import adapter_param_formula

        return adapter_param_formula(model, cfg.get("bottleneck", ADAPTER_BOTTLENECK), cfg.get("placement", "houlsby"),
                                     task_type)
    head = _head_params(model, task_type)
    if method == "prompt_tuning":
        return cfg.get("num_virtual_tokens", PROMPT_TOKENS) * model.config.hidden_size + head
    if method == "prefix_tuning":
        n, layers, kv = cfg.get("num_virtual_tokens", PREFIX_TOKENS), model.config.num_hidden_layers, prefix_kv_dim(model)
        if not cfg.get("prefix_projection", True):
            return n * 2 * layers * kv + head
        h = cfg.get("encoder_hidden_size") or kv
        return n * kv + (kv * h + h) + (h * 2 * layers * kv + 2 * layers * kv) + head
    if method == "ia3":
        defaults = _with_model_defaults("ia3", model, {k: v for k, v in cfg.items() if k in ("target_modules",
                                                                                                "feedforward_modules")})
        targets, feedforward = defaults["target_modules"], defaults.get("feedforward_modules") or []
        total = 0
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and _matches(name, targets):
                total += module.in_features if _matches(name, feedforward) else module.out_features
        return total + head
    raise KeyError(f"No parameter formula for {method!r}")


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
