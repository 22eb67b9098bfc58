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

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common_utils.training.memory import GIB, model_state_bytes_per_gpu

# (stage, offload_optimizer, offload_params), from fastest to most memory-frugal
LADDER: list[tuple[int, bool, bool]] = [(0, False, False), (1, False, False), (2, False, False), (3, False, False),
                                        (2, True, False), (3, True, False), (3, True, True)]


@dataclass(frozen=True)
class ZeroPlan:
    """The chosen setup and the arithmetic behind it, per GPU. Every `_gb` field is in GiB (2**30 bytes,
    the package's unit, common_utils.training.memory.GIB), GPU memory included."""

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
        return (f"{self.params / 1e9:.2f}B params on {self.gpus} x {self.gpu_memory_gb:g} GiB: ZeRO-{self.stage}, "
                f"offload {offload}; model states {self.model_state_gb:.1f} GiB/GPU, "
                f"{self.activation_budget_gb:.1f} GiB left for activations -> micro-batch {self.micro_batch}")


def plan_zero(params: int, gpus: int, gpu_memory_gb: float, activation_gb_per_sample: float,
              largest_layer_params: int = 0, reserve_fraction: float = 0.1, max_micro_batch: int = 64) -> ZeroPlan:
    """The fastest rung of LADDER whose model states leave room for at least one sample.

    `reserve_fraction` of the GPU is kept for the CUDA context, buffers and fragmentation. Raises with
    the smallest requirement when even ZeRO-3 with full offload cannot fit one sample."""
    if activation_gb_per_sample <= 0:
        raise ValueError("activation_gb_per_sample must be positive (measure one step, or estimate from seq_len)")
    usable = gpu_memory_gb * (1 - reserve_fraction)
    for stage, off_opt, off_par in LADDER:
        states = model_state_bytes_per_gpu(params, gpus, stage, off_opt, off_par, largest_layer_params) / GIB
        budget = usable - states
        if budget >= activation_gb_per_sample:
            micro = min(max_micro_batch, int(budget // activation_gb_per_sample))
            return ZeroPlan(params, gpus, gpu_memory_gb, stage, off_opt, off_par, round(states, 3),
                            round(budget, 3), micro)
    raise ValueError(f"{params / 1e9:.2f}B parameters do not fit {gpus} x {gpu_memory_gb} GiB even with ZeRO-3 and "
                     "full offload plus one sample: add GPUs, shorten sequences (activation_gb_per_sample) or "
                     "use activation checkpointing")


def deepspeed_config(plan: ZeroPlan, global_batch: int, learning_rate: float = 2e-5, bf16: bool = True) -> dict[str, Any]:
    """A DeepSpeed JSON config for a GPU plan: `zero_train_config` (the one builder) plus DeepSpeed's
    own AdamW, bf16 and parameter offload; gradient accumulation fills the global batch."""
    per_step = plan.micro_batch * plan.gpus
    if global_batch % per_step:
        raise ValueError(f"global_batch {global_batch} must be a multiple of micro_batch x gpus = {per_step}")
    config = zero_train_config(plan.stage, plan.micro_batch, global_batch // per_step, plan.gpus,
                               offload_optimizer=plan.offload_optimizer)
    zero = config["zero_optimization"]
    zero.update({"overlap_comm": True, "contiguous_gradients": True})
    if plan.offload_optimizer:
        zero["offload_optimizer"]["pin_memory"] = True
    if plan.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config.update({"optimizer": {"type": "AdamW", "params": {"lr": learning_rate, "weight_decay": 0.0}},
                   "bf16": {"enabled": bf16}, "gradient_clipping": 1.0})
    return config


# ---- what one rank really holds, measured ----------------------------------------------------------
# What one rank of a DeepSpeed ZeRO run really holds: parameters, gradients and optimizer states.
#
# `rank_model_states(engine)` walks the tensors a DeepSpeed engine keeps (the module's parameters or,
# under ZeRO-3, their `ds_tensor` partitions; `.grad` and the ZeRO optimizer's gradient partitions; the
# torch optimizer's moments and ZeRO's fp32 master partitions) and adds up the bytes of the memory they
# cover. Overlapping views (a parameter that is a slice of a flat buffer) count once, and memory counted
# in an earlier category is not counted again, so the three numbers add up to what the rank stores.
#
# `common_utils.training.memory.fp32_zero_bytes` is the ZeRO paper's partitioning (Rajbhandari et al., 2020: P_os, P_os+g,
# P_os+g+p) with fp32 byte counts, the accounting of a CPU run: 4-byte weights and gradients, and Adam's
# K = 12 bytes (fp32 master copy 4 + two moments 8) once ZeRO keeps a master partition; plain data
# parallelism in fp32 updates the weights in place, so stage 0 keeps only the 8 bytes of moments.
# The paper's mixed-precision numbers (2 + 2 + 12) are `model_state_bytes_per_gpu` beside it.

CATEGORIES = ("params", "grads", "optimizer")


def _tensors(obj: Any) -> list[Any]:
    """Every tensor inside nested lists / tuples / dicts (ZeRO keeps per-group lists of partitions)."""
    import torch

    if torch.is_tensor(obj):
        return [obj]
    if isinstance(obj, dict):
        return [t for value in obj.values() for t in _tensors(value)]
    if isinstance(obj, (list, tuple)):
        return [t for value in obj for t in _tensors(value)]
    return []


def _intervals(tensors: list[Any]) -> list[tuple[int, int]]:
    """[start, end) byte ranges of the memory each tensor views (its storage span for strided views)."""
    spans = []
    for t in tensors:
        if t is None or t.numel() == 0 or t.device.type == "meta":
            continue
        size = t.element_size() * (t.numel() if t.is_contiguous() else
                                   1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride())))
        spans.append((int(t.data_ptr()), int(t.data_ptr()) + size))
    return spans


def union_bytes(spans: list[tuple[int, int]]) -> int:
    """Bytes covered by a set of [start, end) ranges, overlaps counted once."""
    total, current_start, current_end = 0, None, None
    for start, end in sorted(spans):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    return total + (current_end - current_start if current_end is not None else 0)


def _category_tensors(engine) -> dict[str, list[Any]]:
    """The tensors of each category in a DeepSpeed engine (stage 0 engine, ZeRO-1/2 or ZeRO-3 optimizer)."""
    params = list(engine.module.parameters())
    optimizer = engine.optimizer
    inner = getattr(optimizer, "optimizer", optimizer)  # ZeRO wraps the torch optimizer
    return {
        # ZeRO-3 replaces p.data by an empty placeholder and keeps this rank's slice in p.ds_tensor
        "params": [getattr(p, "ds_tensor", p.data) for p in params],
        "grads": [p.grad for p in params] + [getattr(p, "grad_accum", None) for p in params]
        + _tensors(getattr(optimizer, "all_grad_tensors", None))  # ZeRO-1/2 while accumulating (fp32)
        + _tensors(getattr(optimizer, "averaged_gradients", None))  # ZeRO-1/2 gradient partitions
        + _tensors(getattr(optimizer, "grad_partitions_flat_buffer", None)),  # ZeRO-3
        "optimizer": _tensors([state for state in inner.state.values()])
        + _tensors(getattr(optimizer, "single_partition_of_fp32_groups", None))  # ZeRO-1/2 fp32 master
        + _tensors(getattr(optimizer, "fp32_partitioned_groups_flat", None)),  # ZeRO-3 fp32 master
    }


def rank_model_states(engine) -> dict[str, int]:
    """Bytes of parameters, gradients and optimizer states this rank holds right now.

    Call it after a backward that is not a gradient-accumulation boundary and after the first
    optimizer step (torch creates Adam's moments lazily): then every category is populated."""
    counted: list[tuple[int, int]] = []
    result = {}
    for name, tensors in _category_tensors(engine).items():
        spans = _intervals(tensors)
        result[name] = union_bytes(counted + spans) - union_bytes(counted)
        counted += spans
    return result


def overlapping_param_numel(param_numels: list[int], ranks: int, rank: int) -> int:
    """Elements of the parameters that overlap `rank`'s slice of the flattened parameter list.

    ZeRO-1/2 cut the concatenation of all parameters into `ranks` equal slices. While gradients
    accumulate in fp32 (no gradient-accumulation-boundary yet), DeepSpeed keeps the *whole* gradient
    of every parameter that touches the rank's slice, so one big tensor that crosses a slice boundary
    (an embedding matrix) is held whole by both ranks it touches."""
    if not 0 <= rank < ranks:
        raise ValueError(f"rank must be in [0, {ranks}), got {rank}")
    total = sum(param_numels)
    size = -(-total // ranks)  # ceil: the last slice holds the padding
    lo, hi = rank * size, (rank + 1) * size
    covered, start = 0, 0
    for numel in param_numels:
        if start < hi and start + numel > lo:
            covered += numel
        start += numel
    return covered


def zero_train_config(stage: int, micro_batch: int, grad_accum: int, world_size: int,
                      offload_optimizer: bool = False) -> dict[str, Any]:
    """The DeepSpeed config both launch routes of the lab use (fp32: no fp16/bf16 section, as on CPU).

    The optimizer is the script's own torch AdamW (client optimizer), so DeepSpeed does not JIT-build
    its FusedAdam/CPUAdam op; with `offload_optimizer` DeepSpeed needs its CPU Adam op instead."""
    zero: dict[str, Any] = {"stage": stage}
    if offload_optimizer:
        if stage not in (1, 2, 3):
            raise ValueError("optimizer offload needs ZeRO stage 1, 2 or 3")
        zero["offload_optimizer"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world_size,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10_000,
        "wall_clock_breakdown": False,
    }


def accelerate_deepspeed_yaml(path: str | Path, deepspeed_json: str | Path, num_processes: int,
                              port: int | None = None) -> Path:
    """Write an `accelerate launch --config_file` YAML whose DeepSpeed plugin reads `deepspeed_json`.

    One config file for both routes keeps plain DeepSpeed and Accelerate comparable; `use_cpu` follows
    the machine (on CUDA each process takes one GPU). No `zero3_init_flag`: with accelerate 1.15 and
    transformers 5.23 a ZeRO-3 plugin makes `from_pretrained` build the model under `zero.Init` even
    when the flag is false (measured; docs/troubleshooting.md), so the YAML does not pretend otherwise."""
    from common_utils.core.artifacts import atomic_file
    from common_utils.core.processes import free_port

    import torch

    lines = [
        "compute_environment: LOCAL_MACHINE",
        "distributed_type: DEEPSPEED",
        "deepspeed_config:",
        f"  deepspeed_config_file: {Path(deepspeed_json).resolve()}",
        "machine_rank: 0",
        "main_process_ip: 127.0.0.1",
        f"main_process_port: {port or free_port()}",
        "num_machines: 1",
        f"num_processes: {num_processes}",
        "rdzv_backend: static",
        "same_network: true",
        f"use_cpu: {'false' if torch.cuda.is_available() else 'true'}",
    ]
    path = Path(path)
    with atomic_file(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_zero_configs(folder: str | Path, stage: int, micro_batch: int, grad_accum: int,
                       num_processes: int) -> tuple[Path, Path]:
    """The DeepSpeed JSON (`zero_train_config`) and the `accelerate launch` YAML that reads it, written
    atomically into `folder` as ds_zero{stage}.json and accelerate_zero{stage}.yaml."""
    from common_utils.core.artifacts import atomic_file

    folder = Path(folder)
    ds_json = folder / f"ds_zero{stage}.json"
    with atomic_file(ds_json) as tmp:
        Path(tmp).write_text(json.dumps(zero_train_config(stage, micro_batch, grad_accum, num_processes), indent=2),
                             encoding="utf-8")
    return ds_json, accelerate_deepspeed_yaml(folder / f"accelerate_zero{stage}.yaml", ds_json, num_processes)


def load_zero_checkpoint(folder: str | Path, tag: str = "final"):
    """A Hugging Face causal LM with the fp32 weights consolidated from a ZeRO checkpoint.

    DeepSpeed's `get_fp32_state_dict_from_zero_checkpoint` (the zero_to_fp32 utility) merges every
    rank's partition files; the model is built from the config saved beside them and loaded strictly,
    so a missing or extra tensor raises instead of leaving random weights."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").exists() or not (folder / tag).is_dir():
        raise FileNotFoundError(f"{folder} is not a ZeRO checkpoint with a model config (expected config.json and "
                                f"{tag}/): write it with engine.save_checkpoint(folder, tag={tag!r}) and save the config")
    state = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=tag)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    model.load_state_dict(state, strict=True)
    return model.eval()


def accelerate_command(config_file: str | Path, script: str | Path, args: list[str] | None = None) -> list[str]:
    """`accelerate launch --config_file ... script args` with this interpreter (as `python -m`), so the
    processes see the notebook's environment; the YAML sets the process count, port and DeepSpeed plugin."""
    import sys

    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file), str(script),
            *[str(a) for a in (args or [])]]


def launch_accelerate(script: str | Path, args: list[str] | None = None, config_file: str | Path = "",
                      log_path: str | Path | None = None, timeout_s: float = 300):
    """Run `accelerate launch` as common_utils.core.processes.launch runs torchrun: a hard timeout that
    stops every worker, one log file, and an error with the first traceback when it fails."""
    from common_utils.core.processes import run_command

    script, config_file = Path(script), Path(config_file)
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: launch a script that lives beside the notebook")
    if not config_file.is_file():
        raise FileNotFoundError(f"accelerate config {config_file} not found: write it with accelerate_deepspeed_yaml")
    log_path = Path(log_path or Path("outputs") / "logs" / f"{script.stem}_accelerate.log")
    return run_command(accelerate_command(config_file, script, args), log_path, timeout_s)


def ensure_deepspeed_cpu_comm_op(stale_lock_s: float = 600.0) -> dict[str, Any]:
    """Build (once) or load DeepSpeed's CPU shared-memory communication op, and say which it did.

    With `DS_BUILD_OPS=0` DeepSpeed compiles `deepspeed_shm_comm` with the system compiler the first
    time a multi-process CPU run starts (measured 67 s alone on this course's 2-core machine, >400 s
    under heavy load), inside `deepspeed.initialize`, where it would eat a notebook's time budget;
    scripts/install.sh calls this once so the runs only load it. A `lock` file older than
    `stale_lock_s` is what a killed build leaves behind (later builds wait on it forever): it is
    removed, with a message. On CUDA the op is not used and nothing is built."""
    import time

    import torch

    if torch.cuda.is_available():
        return {"built": False, "seconds": 0.0, "reason": "CUDA: DeepSpeed uses NCCL, not the CPU shm op"}
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder
    from torch.utils.cpp_extension import _get_build_directory

    builder = ShareMemCommBuilder()
    if not builder.is_compatible(False):  # e.g. macOS: DeepSpeed falls back to plain gloo collectives
        return {"built": False, "seconds": 0.0, "reason": "the shm op is not supported on this platform"}
    folder = Path(_get_build_directory(builder.name, False))
    lock = folder / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > stale_lock_s:
        print(f"removing a stale build lock left by an interrupted build: {lock}")
        lock.unlink(missing_ok=True)
    def library_mtimes() -> dict[Path, float]:
        return {so: so.stat().st_mtime for so in folder.glob(f"{builder.name}*.so")}

    before = library_mtimes()
    start = time.perf_counter()
    builder.load(verbose=False)
    seconds = time.perf_counter() - start
    # compiled now = the library is new or was rewritten (ninja also rebuilds a cached one whose build
    # inputs changed, e.g. after switching to another virtual environment)
    return {"built": library_mtimes() != before, "seconds": round(seconds, 2), "folder": str(folder)}
