"""Where training memory goes, measured and predicted.

* `SavedTensorMeter` counts the bytes autograd keeps for backward (the activations), through
  `torch.autograd.graph.saved_tensors_hooks`: the same number on CPU and GPU, so a CPU-only class can
  see what gradient checkpointing saves.
* `causal_lm_batch`, `token_loss_sum` and `accumulated_gradients` make gradient accumulation exact
  (the loss normalisation pitfall: averaging per micro-batch is wrong when micro-batches hold
  different numbers of real tokens).
* `estimate_training_memory` predicts weights / gradients / optimizer states per method and precision
  (ZeRO, Rajbhandari et al., 2020: mixed-precision Adam needs 16 bytes per parameter).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from common_utils.data import IGNORE_INDEX

# ---- the one bytes-per-parameter table and unit convention of the course ---------------------------
# Every memory number the course prints is in binary units: GIB = 2**30 bytes ("GiB"), MIB = 2**20.
GIB = 2**30
# Bytes per stored value of each number format (nf4: 4 bits; its per-block scales are counted apart).
BYTES_PER_PARAM: dict[str, float] = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1, "nf4": 0.5}
# Adam keeps two fp32 moments (8 bytes) and, under mixed precision or ZeRO, an fp32 master copy (4):
# the ZeRO paper's K = 12 (Rajbhandari et al., 2020).
ADAM_MOMENT_BYTES = 8
K_ADAM = 12
# DeepSpeed's own estimators count 18 bytes per parameter beyond the 16-bit weights:
# 16-bit grads 2 + fp32 grads 4 + fp32 params 4 + Adam 8.
DS_OPTIM_BYTES = 18

# Bytes per *trainable* parameter: (weight, gradient, fp32 master copy).
PRECISION_BYTES: dict[str, tuple[float, float, float]] = {
    "fp32": (4, 4, 0),
    "mixed": (2, 2, 4),  # fp16/bf16 weights and grads + fp32 master weights (Micikevicius et al., 2018)
    "bf16": (2, 2, 0),  # pure bf16 training, no master copy
}
# Bytes per trainable parameter kept by the optimizer.
OPTIMIZER_BYTES: dict[str, float] = {"adamw": 8, "adamw_8bit": 2, "sgd_momentum": 4, "sgd": 0}
# Bytes per *frozen* parameter, by storage format (LoRA keeps the base frozen; QLoRA stores it in NF4).
FROZEN_WEIGHT_BYTES: dict[str, float] = BYTES_PER_PARAM


class SavedTensorMeter:
    """Count the bytes of tensors autograd saves for backward while the block runs.

    Each storage is counted once (views share it); tensors listed in `exclude` (the model's
    parameters, which backward needs anyway) are left out, so the total is the activation memory.

        with SavedTensorMeter(exclude=model.parameters()) as meter:
            loss = model(**batch).loss
        meter.bytes
    """

    def __init__(self, exclude: Iterable[Any] = ()) -> None:
        self._excluded = {int(t.untyped_storage().data_ptr()) for t in exclude}
        self._seen: set[int] = set()
        self.bytes = 0
        self.count = 0

    def _pack(self, tensor):
        storage = tensor.untyped_storage()
        pointer = int(storage.data_ptr())
        if pointer not in self._excluded and pointer not in self._seen:
            self._seen.add(pointer)
            self.bytes += storage.nbytes()
            self.count += 1
        return tensor

    def __enter__(self) -> SavedTensorMeter:
        import torch

        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)

    @property
    def mb(self) -> float:
        return self.bytes / 2**20


def causal_lm_batch(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, Any]:
    """Right-padded causal-LM batch whose labels are the input ids with padding set to -100,
    so padding tokens never count in the loss (nor in its normaliser)."""
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = IGNORE_INDEX
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}


def token_loss_sum(model, batch: dict[str, Any]):
    """(summed next-token cross-entropy over the labelled tokens, number of those tokens).

    Returning the sum, not the mean, lets the caller choose the normaliser: the whole-batch token
    count makes accumulated gradients equal the big-batch gradient."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:].to(logits.device)
    logits = logits[:, :-1]
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((labels != IGNORE_INDEX).sum())


def split_batch(batch: dict[str, Any], micro_batch_size: int) -> list[dict[str, Any]]:
    """Cut a batch into micro-batches of `micro_batch_size` rows, trimming each to its own longest
    row (as a per-micro-batch collator would pad it)."""
    total = batch["input_ids"].size(0)
    if micro_batch_size <= 0 or total % micro_batch_size:
        raise ValueError(f"micro_batch_size={micro_batch_size} must divide the batch of {total} rows")
    micro = []
    for start in range(0, total, micro_batch_size):
        rows = {key: value[start:start + micro_batch_size] for key, value in batch.items()}
        length = int(rows["attention_mask"].sum(dim=1).max())
        micro.append({key: value[:, :length] for key, value in rows.items()})
    return micro


def accumulated_gradients(model, micro_batches: Sequence[dict[str, Any]], normalisation: str = "global"):
    """Accumulate gradients over micro-batches (model.grad is zeroed first) and return the loss.

    normalisation="global": each micro-batch's token-loss sum is divided by the token count of *all*
    micro-batches, so the accumulated gradient equals the gradient of one big batch.
    normalisation="per_micro": each micro-batch's mean loss divided by the number of micro-batches,
    the naive recipe; it weights tokens of short micro-batches more and does not match."""
    if normalisation not in {"global", "per_micro"}:
        raise ValueError(f"normalisation must be 'global' or 'per_micro', not {normalisation!r}")
    model.zero_grad(set_to_none=True)
    total_tokens = sum(int((mb["labels"][:, 1:] != IGNORE_INDEX).sum()) for mb in micro_batches)
    reported = 0.0
    for micro in micro_batches:
        loss_sum, n_tokens = token_loss_sum(model, micro)
        if normalisation == "global":
            loss = loss_sum / total_tokens
        else:
            loss = loss_sum / n_tokens / len(micro_batches)
        loss.backward()
        reported += float(loss.detach())
    return reported


def flat_grad(model):
    """All parameter gradients as one fp32 vector (parameters without a gradient are skipped)."""
    import torch

    return torch.cat([p.grad.detach().float().reshape(-1) for p in model.parameters() if p.grad is not None])


def relative_error(a, b) -> float:
    """||a - b|| / ||b||: how far a gradient is from the reference, independent of its scale."""
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted training memory in bytes, by where it goes."""

    weights: float
    gradients: float
    optimizer: float
    master_weights: float
    activations: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.master_weights + self.activations

    def as_gib(self) -> dict[str, float]:
        parts = {"weights": self.weights, "gradients": self.gradients, "optimizer": self.optimizer,
                 "master_weights": self.master_weights, "activations": self.activations, "total": self.total}
        return {name: value / GIB for name, value in parts.items()}


def estimate_training_memory(total_params: int, trainable_params: int | None = None, precision: str = "fp32",
                             optimizer: str = "adamw", frozen_format: str | None = None,
                             activation_bytes: float = 0.0) -> MemoryEstimate:
    """Predict the memory of one training setup, before activations unless `activation_bytes` is given.

    Full fine-tuning: trainable_params=None (all parameters train). LoRA: trainable_params = the adapter
    size, frozen base stored as `frozen_format` (default: the training precision's weight format);
    QLoRA: frozen_format="nf4" (0.5 byte per parameter, quantization constants ignored).
    Check: full fine-tuning of a 1.5B model with mixed-precision Adam -> 16 bytes/param = 24e9 bytes (22.4 GiB), the
    number ("24 GB") the ZeRO paper (Rajbhandari et al., 2020, section 3.1) gives for GPT-2 1.5B."""
    if precision not in PRECISION_BYTES:
        raise ValueError(f"precision must be one of {sorted(PRECISION_BYTES)}, not {precision!r}")
    if optimizer not in OPTIMIZER_BYTES:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_BYTES)}, not {optimizer!r}")
    trainable = total_params if trainable_params is None else trainable_params
    if not 0 <= trainable <= total_params:
        raise ValueError(f"trainable_params={trainable} must be between 0 and total_params={total_params}")
    weight_b, grad_b, master_b = PRECISION_BYTES[precision]
    frozen_b = weight_b if frozen_format is None else FROZEN_WEIGHT_BYTES[frozen_format]
    frozen = total_params - trainable
    return MemoryEstimate(weights=trainable * weight_b + frozen * frozen_b, gradients=trainable * grad_b,
                          optimizer=trainable * OPTIMIZER_BYTES[optimizer], master_weights=trainable * master_b,
                          activations=activation_bytes)


def truncate_layers(model, num_layers: int):
    """Keep the first `num_layers` decoder layers of a Llama-style causal LM, in place.

    The real weights and widths stay, so per-layer activation memory is the course model's own,
    while a forward/backward costs a fraction of the full 30 layers on a 2-core CPU."""
    layers = model.model.layers
    if not 1 <= num_layers <= len(layers):
        raise ValueError(f"num_layers must be between 1 and {len(layers)}, not {num_layers}")
    model.model.layers = layers[:num_layers]
    model.config.num_hidden_layers = num_layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:num_layers]
    return model


def tensor_bytes(tensors: Iterable[Any]) -> int:
    """Total bytes of some tensors, each storage counted once (tied weights are one tensor)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[int(storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of every tensor the optimizer keeps (Adam's exp_avg and exp_avg_sq, step counters)."""
    return tensor_bytes(value for state in optimizer.state.values() for value in state.values()
                        if hasattr(value, "untyped_storage"))


def memory_timeline(prof, device: str = "cpu") -> tuple[list[float], dict[str, list[float]]]:
    """(times in ms, bytes per category) from a `torch.profiler.profile(profile_memory=True,
    record_shapes=True, with_stack=True)` run, the data behind `export_memory_timeline`.

    Uses torch's own categoriser (parameter, optimizer state, input, temporary, activation,
    gradient, autograd detail, unknown); it is a private torch module, so this wrapper keeps the
    notebooks independent of its shape."""
    from torch.profiler._memory_profiler import _CATEGORY_TO_COLORS, MemoryProfileTimeline

    times, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(device)
    if not times:
        raise RuntimeError(f"the profile holds no memory events for {device!r}: profile with "
                           "profile_memory=True, record_shapes=True, with_stack=True")
    start = times[0]
    names = [category.name.lower() if category is not None else "unknown" for category in _CATEGORY_TO_COLORS]
    by_name = {name: [float(row[i + 1]) for row in sizes] for i, name in enumerate(names)}
    return [(t - start) / 1e3 for t in times], by_name


def plot_memory_timeline(times_ms: Sequence[float], by_category: dict[str, Sequence[float]],
                         title: str = "Memory timeline"):
    """Stacked area chart of memory by category over time (MB). Returns the figure."""
    from common_utils.core.plots import apply_course_style

    import matplotlib.pyplot as plt
    import numpy as np

    apply_course_style()
    fig, ax = plt.subplots()
    shown = {name: np.asarray(values) / 2**20 for name, values in by_category.items() if max(values, default=0) > 0}
    ax.stackplot(times_ms, *shown.values(), labels=list(shown))
    ax.set(xlabel="time (ms)", ylabel="memory (MB)", title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def peak_tensor_memory_mb(fn, device: str = "cpu") -> float:
    """Run `fn()` under `torch.profiler` and return the peak bytes of live tensors on `device` (MB).

    Deterministic and allocator-independent (it follows every allocation and free), so a CPU
    measurement shows the same O(N) vs O(N^2) shape a GPU's `max_memory_allocated` would."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities, profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    _, by_category = memory_timeline(prof, device)
    totals = [sum(values) for values in zip(*by_category.values())]
    return max(totals) / 2**20


# ---- model states under ZeRO (what each rank must hold) ---------------------------------------------

def model_state_bytes_per_gpu(params: int, gpus: int, stage: int, offload_optimizer: bool = False,
                              offload_params: bool = False, largest_layer_params: int = 0) -> int:
    """GPU bytes of parameters, gradients and optimizer states on one GPU (mixed-precision Adam)."""
    if params <= 0 or gpus <= 0:
        raise ValueError(f"params and gpus must be positive, got params={params}, gpus={gpus}")
    if offload_params and not (stage == 3 and offload_optimizer):
        raise ValueError("parameter offload needs ZeRO stage 3 with optimizer offload (DeepSpeed's offload_param)")
    if stage == 0:
        return (2 + 2 + K_ADAM) * params
    if stage == 1:
        return 4 * params + K_ADAM * params // gpus
    if stage == 2:  # == estimate_zero2_model_states_mem_needs(..., cpu_offload=offload_optimizer)
        return 2 * params if offload_optimizer else 2 * params + DS_OPTIM_BYTES * params // gpus
    if stage == 3:  # == estimate_zero3_model_states_mem_needs(...)
        largest = 4 * largest_layer_params
        if offload_params:
            return largest
        if offload_optimizer:
            return largest + 2 * params // gpus
        return largest + DS_OPTIM_BYTES * params // gpus
    raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {stage}")


def fp32_zero_bytes(params: int, ranks: int, stage: int, master_copy: bool | None = None) -> dict[str, float]:
    """Per-rank bytes of each category for fp32 Adam training under the ZeRO paper's partitioning.

    `master_copy` (default: True for stages 1-3, False for 0) says whether the optimizer keeps its own
    fp32 copy of the weights; DeepSpeed's ZeRO optimizers always do, plain fp32 data parallelism not."""
    if params <= 0 or ranks <= 0:
        raise ValueError(f"params and ranks must be positive, got params={params}, ranks={ranks}")
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {stage}")
    master = stage > 0 if master_copy is None else master_copy
    optimizer = (8 + (4 if master else 0)) * params
    return {
        "params": 4 * params / (ranks if stage == 3 else 1),
        "grads": 4 * params / (ranks if stage >= 2 else 1),
        "optimizer": optimizer / (ranks if stage >= 1 else 1),
    }


# ---- what 4-bit storage really saves ---------------------------------------------------------------

@dataclass(frozen=True)
class QuantizedLinearBytes:
    """Bytes of a model's 4-bit (bitsandbytes Linear4bit) weights, and what the same weights take in 16 bits."""

    layers: int  # Linear4bit modules found (0: the model is not quantized)
    stored: int  # packed 4-bit weights + quantization constants (absmax, nested absmax and code)
    sixteen_bit: int  # the same weights in bf16/fp16: 2 bytes per parameter

    @property
    def ratio(self) -> float:
        return self.stored / self.sixteen_bit if self.sixteen_bit else float("nan")


def nf4_linear_bytes(model) -> QuantizedLinearBytes:
    """Measure what NF4 buys on the quantized linear layers alone.

    `get_memory_footprint()` also counts the parts QLoRA keeps unquantized (embedding, norms, head),
    whose dtype differs between a CPU (fp32) and a GPU (bf16) run, so a whole-model ratio changes with
    the device; the 4-bit weights against their own 16-bit size do not (4 bits + one constant per
    block of 64: about 0.26-0.28)."""
    import bitsandbytes as bnb

    def nbytes(tensor) -> int:
        return tensor.numel() * tensor.element_size()

    layers = stored = sixteen_bit = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            state = module.weight.quant_state
            layers += 1
            stored += nbytes(module.weight) + nbytes(state.absmax)
            if state.nested:
                stored += nbytes(state.state2.absmax) + nbytes(state.state2.code)
            sixteen_bit += 2 * math.prod(state.shape)
    return QuantizedLinearBytes(layers, stored, sixteen_bit)
