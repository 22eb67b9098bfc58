"""Choose a DeepSpeed ZeRO setup from model size, GPU count and GPU memory, with its memory estimate.

The per-GPU model-state formulas follow DeepSpeed's own estimators
(`deepspeed.runtime.zero.stage_1_and_2.estimate_zero2_model_states_mem_needs` and
`stage3.estimate_zero3_model_states_mem_needs`, tested against them in tests/test_zero_config.py),
which count 18 bytes per parameter for mixed-precision Adam beyond the 2-byte fp16/bf16 weights:
2 (16-bit grads) + 4 (fp32 grads) + 4 (fp32 master weights) + 8 (Adam moments). Stages 0 and 1,
which DeepSpeed's estimators do not cover, use the ZeRO paper's accounting (Rajbhandari et al., 2020:
2 + 2 + K bytes per parameter, K = 12).

Activation memory depends on sequence length, hidden size and checkpointing, so callers pass their
own bytes-per-sample estimate; the plan spends what model states leave over on the micro-batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

GB = 1024**3
K_ADAM = 12  # ZeRO paper: fp32 master weights + two fp32 Adam moments, bytes per parameter
DS_OPTIM_BYTES = 18  # DeepSpeed estimators: 16-bit grads 2 + fp32 grads 4 + fp32 params 4 + Adam 8

# (stage, offload_optimizer, offload_params), from fastest to most memory-frugal
LADDER: list[tuple[int, bool, bool]] = [(0, False, False), (1, False, False), (2, False, False), (3, False, False),
                                        (2, True, False), (3, True, False), (3, True, True)]


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


@dataclass(frozen=True)
class ZeroPlan:
    """The chosen setup and the arithmetic behind it (bytes are per GPU)."""

    params: int
    gpus: int
    gpu_memory_gb: float
    stage: int
    offload_optimizer: bool
    offload_params: bool
    model_state_gb: float
    activation_budget_gb: float
    micro_batch: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def explain(self) -> str:
        offload = ("optimizer+params" if self.offload_params else "optimizer") if self.offload_optimizer else "none"
        return (f"{self.params / 1e9:.2f}B params on {self.gpus} x {self.gpu_memory_gb:g} GB: ZeRO-{self.stage}, "
                f"offload {offload}; model states {self.model_state_gb:.1f} GB/GPU, "
                f"{self.activation_budget_gb:.1f} GB left for activations -> micro-batch {self.micro_batch}")


def plan_zero(params: int, gpus: int, gpu_memory_gb: float, activation_gb_per_sample: float,
              largest_layer_params: int = 0, reserve_fraction: float = 0.1, max_micro_batch: int = 64) -> ZeroPlan:
    """The fastest rung of LADDER whose model states leave room for at least one sample.

    `reserve_fraction` of the GPU is kept for the CUDA context, buffers and fragmentation. Raises with
    the smallest requirement when even ZeRO-3 with full offload cannot fit one sample."""
    if activation_gb_per_sample <= 0:
        raise ValueError("activation_gb_per_sample must be positive (measure one step, or estimate from seq_len)")
    usable = gpu_memory_gb * (1 - reserve_fraction)
    for stage, off_opt, off_par in LADDER:
        states = model_state_bytes_per_gpu(params, gpus, stage, off_opt, off_par, largest_layer_params) / GB
        budget = usable - states
        if budget >= activation_gb_per_sample:
            micro = min(max_micro_batch, int(budget // activation_gb_per_sample))
            return ZeroPlan(params, gpus, gpu_memory_gb, stage, off_opt, off_par, round(states, 3),
                            round(budget, 3), micro)
    raise ValueError(f"{params / 1e9:.2f}B parameters do not fit {gpus} x {gpu_memory_gb} GB even with ZeRO-3 and "
                     "full offload plus one sample: add GPUs, shorten sequences (activation_gb_per_sample) or "
                     "use activation checkpointing")


def deepspeed_config(plan: ZeroPlan, global_batch: int, learning_rate: float = 2e-5, bf16: bool = True) -> dict[str, Any]:
    """A DeepSpeed JSON config for the plan; gradient accumulation fills the global batch."""
    per_step = plan.micro_batch * plan.gpus
    if global_batch % per_step:
        raise ValueError(f"global_batch {global_batch} must be a multiple of micro_batch x gpus = {per_step}")
    zero: dict[str, Any] = {"stage": plan.stage, "overlap_comm": True, "contiguous_gradients": True}
    if plan.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if plan.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_batch_size": global_batch,
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": global_batch // per_step,
        "optimizer": {"type": "AdamW", "params": {"lr": learning_rate, "weight_decay": 0.0}},
        "bf16": {"enabled": bf16},
        "zero_optimization": zero,
        "gradient_clipping": 1.0,
    }
