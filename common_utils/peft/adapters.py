"""Bottleneck adapters (Houlsby et al., 2019), small enough to read in one sitting.

AdapterHub's `adapters` package pins transformers 4.x, so the course carries its own: after a
sublayer's output projection, a bottleneck `h + up(act(down(h)))` is inserted, with `up` initialised
to zero so the adapted model starts *exactly* as the base model. Houlsby placement puts one adapter
after the attention output and one after the feed-forward output of every layer; Pfeiffer placement
(Pfeiffer et al., 2021) keeps only the feed-forward one. Adapters are nonlinear, so unlike LoRA they
cannot be merged into the base weights: deployment ships the adapter weights alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ADAPTER_CONFIG_FILE = "adapter_config.json"  # the same name peft uses, so ensure_adapter finds either kind
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_KIND = "bottleneck_adapter"

# model_type -> regex (full match on module names) of the attention and feed-forward output projections
SUBLAYER_OUTPUTS: dict[str, dict[str, str]] = {
    "llama": {"attention": r".*\.self_attn\.o_proj", "ffn": r".*\.mlp\.down_proj"},
    "bert": {"attention": r".*\.attention\.output\.dense", "ffn": r".*\.layer\.\d+\.output\.dense"},
}
PLACEMENTS: dict[str, tuple[str, ...]] = {"houlsby": ("attention", "ffn"), "pfeiffer": ("ffn",)}
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
HEAD_NAMES = ("classifier", "score")  # sequence-classification heads, trained with the adapters (as peft does)


@dataclass(frozen=True)
class AdapterConfig:
    bottleneck: int = 16  # m, the bottleneck width: parameters grow linearly with it
    placement: str = "houlsby"  # houlsby (attention + FFN) | pfeiffer (FFN only)
    non_linearity: str = "relu"
    task_type: str = "CAUSAL_LM"  # CAUSAL_LM | SEQ_CLS (SEQ_CLS also trains the new classifier head)

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement={self.placement!r}; choose one of {sorted(PLACEMENTS)}")
        if self.non_linearity not in ACTIVATIONS:
            raise ValueError(f"non_linearity={self.non_linearity!r}; choose one of {sorted(ACTIVATIONS)}")
        if self.bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {self.bottleneck}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": ADAPTER_KIND, **asdict(self)}


class BottleneckAdapter(nn.Module):
    """h + up(act(down(h))); `up` starts at zero, so the adapter starts as the identity."""

    def __init__(self, hidden_size: int, bottleneck: int, non_linearity: str = "relu") -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.act = ACTIVATIONS[non_linearity]()
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.act(self.down(hidden)))


class AdaptedLinear(nn.Module):
    """A frozen sublayer output projection followed by its adapter (before the layer's own residual)."""

    def __init__(self, base: nn.Linear, adapter: BottleneckAdapter) -> None:
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))


def adapter_targets(model, placement: str = "houlsby") -> list[str]:
    """Names of the nn.Linear modules an adapter follows, for this model type and placement."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SUBLAYER_OUTPUTS:
        raise ValueError(f"No adapter placement known for model_type={model_type!r}; known: "
                         f"{sorted(SUBLAYER_OUTPUTS)}. Add its output projections to SUBLAYER_OUTPUTS.")
    patterns = [SUBLAYER_OUTPUTS[model_type][where] for where in PLACEMENTS[placement]]
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and any(re.fullmatch(p, name) for p in patterns)]


def _head_modules(model) -> list[nn.Module]:
    return [module for name, module in model.named_children() if name in HEAD_NAMES]


def add_adapters(model, config: AdapterConfig | None = None, **overrides: Any):
    """Freeze `model`, insert bottleneck adapters in place and return it; only adapters (and, for
    SEQ_CLS, the classifier head) train. The config is kept on `model.adapter_config`."""
    if hasattr(model, "adapter_config"):
        raise ValueError("This model already has bottleneck adapters; load a fresh base model.")
    config = config or AdapterConfig(**overrides)
    for parameter in model.parameters():
        parameter.requires_grad = False
    for name in adapter_targets(model, config.placement):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base: nn.Linear = getattr(parent, child)
        adapter = BottleneckAdapter(base.out_features, config.bottleneck, config.non_linearity)
        adapter.to(device=base.weight.device, dtype=base.weight.dtype)
        setattr(parent, child, AdaptedLinear(base, adapter))
    if config.task_type == "SEQ_CLS":
        for head in _head_modules(model):
            head.requires_grad_(True)
    model.adapter_config = config
    return model


def has_adapters(model) -> bool:
    return isinstance(getattr(model, "adapter_config", None), AdapterConfig)


def adapter_state_dict(model) -> dict[str, torch.Tensor]:
    """Only what the adapters add (and a trained classifier head): what a deployment ships."""
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
            if ".adapter." in name or name.split(".", 1)[0] in HEAD_NAMES and model.adapter_config.task_type == "SEQ_CLS"}


class AdapterWeights:
    """`save_pretrained` of the adapter weights alone, so save_pretrained_atomic can write them."""

    def __init__(self, model) -> None:
        if not has_adapters(model):
            raise ValueError("This model has no bottleneck adapters (apply_peft(model, 'adapter') first).")
        self.model = model

    def save_pretrained(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        (directory / ADAPTER_CONFIG_FILE).write_text(json.dumps(self.model.adapter_config.to_dict(), indent=2))
        save_file(adapter_state_dict(self.model), str(directory / ADAPTER_WEIGHTS_FILE))


def save_adapters(path: str | Path, model, tokenizer=None) -> Path:
    """Write adapter_config.json + adapter weights (and the tokenizer) atomically to `path`."""
    from common_utils.core.artifacts import save_pretrained_atomic

    return save_pretrained_atomic(path, AdapterWeights(model), *([tokenizer] if tokenizer is not None else []))


def is_adapter_dir(path: str | Path) -> bool:
    """True if `path` holds bottleneck adapters (not a peft adapter)."""
    config_file = Path(path) / ADAPTER_CONFIG_FILE
    return config_file.exists() and json.loads(config_file.read_text()).get("kind") == ADAPTER_KIND


def load_adapters(model, path: str | Path):
    """Insert the saved adapters into a fresh base `model` and load their weights; returns it in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    if not is_adapter_dir(path):
        raise FileNotFoundError(f"{path} holds no bottleneck adapters ({ADAPTER_CONFIG_FILE} with "
                                f"kind={ADAPTER_KIND!r}); save them with save_adapters(path, model).")
    saved = json.loads((path / ADAPTER_CONFIG_FILE).read_text())
    saved.pop("kind")
    model = add_adapters(model, AdapterConfig(**saved))
    weights = load_file(str(path / ADAPTER_WEIGHTS_FILE), device=str(next(model.parameters()).device))
    missing = set(adapter_state_dict(model)) - set(weights)
    unexpected = set(weights) - set(model.state_dict())
    if missing or unexpected:
        raise ValueError(f"{path} does not fit this model: missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}. Was it trained on another base model?")
    model.load_state_dict(weights, strict=False)
    return model.eval()


def adapter_param_formula(model, bottleneck: int = 16, placement: str = "houlsby",
                          task_type: str = "CAUSAL_LM", **_: Any) -> int:
    """Trainable parameters: each adapter after a d-wide projection has down (d*m + m) and up (m*d + d),
    i.e. 2*d*m + d + m; Houlsby puts two per layer, Pfeiffer one. SEQ_CLS adds the classifier head.
    Call it on the base model, before add_adapters."""
    total = 0
    for name in adapter_targets(model, placement):
        d = model.get_submodule(name).out_features
        total += 2 * d * bottleneck + d + bottleneck
    if task_type == "SEQ_CLS":
        total += sum(p.numel() for head in _head_modules(model) for p in head.parameters())
    return total
