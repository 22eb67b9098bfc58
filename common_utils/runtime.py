"""Runtime choices made once: the profile (how big a run is), the device, the dtype, the seed.

Notebooks read every size (steps, batch, sequence length, sample counts, model) from the profile,
so one switch, `COURSE_PROFILE=smoke|full`, scales a lab from a 2-core laptop to a 16 GB GPU.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, replace
from typing import Any

PROFILE_ENV = "COURSE_PROFILE"
THREADS_ENV = "COURSE_NUM_THREADS"


@dataclass(frozen=True)
class Profile:
    """Every size a lab needs. Labs read these fields instead of hard-coding numbers."""

    name: str
    model: str  # registry key of the causal LM (see common_utils.models.MODEL_REGISTRY)
    encoder: str  # registry key of the encoder for NLU-style labs
    max_length: int  # tokens per training example (prompt + answer)
    train_steps: int  # optimizer steps of the main fine-tuning run
    batch_size: int  # examples per optimizer step
    learning_rate: float  # for LoRA-style adapters on `model`
    eval_samples: int  # held-out examples scored per model
    max_new_tokens: int  # generation budget for the course tasks
    qlora_steps: int  # optimizer steps of the QLoRA comparison run
    lora_r: int = 8
    lora_alpha: int = 16
    seed: int = 42

    def with_overrides(self, **changes: Any) -> Profile:
        """A copy with some fields changed, e.g. for an exercise: `profile.with_overrides(train_steps=30)`."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    # Calibrated on a 2-core CPU: 12 LoRA steps of batch 4 at lr 1e-3 (~41 s) take the embedded
    # 135M model from 0% to ~97% held-out exact match on the course extraction task.
    "smoke": Profile(
        name="smoke", model="smollm2-135m-instruct", encoder="minilm-l6-v2", max_length=96,
        train_steps=12, batch_size=4, learning_rate=1e-3, eval_samples=40, max_new_tokens=40,
        qlora_steps=5,
    ),
    # For a 16 GB GPU: a 0.5B hub model (falls back to the embedded model when offline).
    "full": Profile(
        name="full", model="qwen2.5-0.5b-instruct", encoder="minilm-l6-v2", max_length=128,
        train_steps=120, batch_size=16, learning_rate=2e-4, eval_samples=60, max_new_tokens=48,
        qlora_steps=120, lora_r=16, lora_alpha=32,
    ),
}


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def get_profile(name: str | None = None) -> Profile:
    """The active profile: `name`, else $COURSE_PROFILE, else `full` on CUDA and `smoke` elsewhere."""
    chosen = name or os.environ.get(PROFILE_ENV) or ("full" if _cuda_available() else "smoke")
    if chosen not in PROFILES:
        raise ValueError(
            f"Unknown profile {chosen!r}. Use one of {sorted(PROFILES)}, e.g. `export {PROFILE_ENV}=smoke`."
        )
    return PROFILES[chosen]


def get_device():
    """CUDA, then Apple MPS, then CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def bf16_supported(device=None) -> bool:
    """bf16 on CUDA only where the GPU supports it (Ampere+); CPUs emulate it slowly, so we say no."""
    import torch

    device = device or get_device()
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def pick_dtype(device=None):
    """Training/inference dtype: bf16 on capable GPUs, fp16 on older GPUs, fp32 on CPU and MPS."""
    import torch

    device = device or get_device()
    if device.type == "cuda":
        return torch.bfloat16 if bf16_supported(device) else torch.float16
    return torch.float32


def seed_everything(seed: int = 42) -> None:
    """Seed python, numpy and torch (CPU and CUDA) so reruns give the same numbers."""
    from transformers import set_seed

    set_seed(seed)


def set_threads(n: int | None = None) -> int:
    """Limit torch's intra-op threads ($COURSE_NUM_THREADS, else all cores); returns the count used."""
    import torch

    n = n or int(os.environ.get(THREADS_ENV, "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


def describe_runtime() -> dict[str, Any]:
    """Versions, device, profile and precision support: what the doctor and 00-Course_Setup print."""
    import importlib.metadata as md

    import torch

    device = get_device()
    versions = {}
    for package in ["torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes"]:
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = "not installed"
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "profile": get_profile().name,
        "bf16_supported": bf16_supported(device),
        "dtype": str(pick_dtype(device)).replace("torch.", ""),
        "versions": versions,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
    return info
