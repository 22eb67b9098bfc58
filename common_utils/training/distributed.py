"""What launched training scripts share (the launch itself is common_utils.core.processes).

Inside a script: `init_distributed()` picks the backend (NCCL on CUDA, gloo on CPU) from the
environment torchrun sets, and `finish_distributed()` tears it down; the data blocks every rank
reads, DDP state-dict helpers, and resumable training checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ---- inside a launched script ----------------------------------------------------------------------

@dataclass
class DistContext:
    """Who this process is: its rank among world_size processes, its device and the backend in use."""

    rank: int
    world_size: int
    local_rank: int
    device: Any
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None, force_cpu: bool = False) -> DistContext:
    """Join the process group torchrun prepared (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment).

    NCCL when CUDA is available (each rank on its own GPU), gloo on CPU; on CPU each rank uses one
    thread, because torchrun's ranks share the machine's cores. `force_cpu` keeps demos that need a
    fixed number of ranks (e.g. two pipeline stages) on CPU even on a machine with fewer GPUs."""
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ:
        raise RuntimeError("RANK is not set: start this script with torchrun (or common_utils.launch), "
                           "not with plain python")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available() and not force_cpu:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def finish_distributed() -> None:
    """Leave the process group cleanly (avoids the 'process group was not destroyed' warning)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def max_abs_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest absolute element difference between two dicts of same-shaped tensors (e.g. state dicts
    or gradients); raises if the keys differ, since a silent key mismatch would hide a real bug."""
    if a.keys() != b.keys():
        raise KeyError(f"different keys: only in first {sorted(set(a) - set(b))[:5]}, "
                       f"only in second {sorted(set(b) - set(a))[:5]}")
    return max((float((a[k].detach().float() - b[k].detach().float()).abs().max()) for k in a), default=0.0)


def strip_ddp_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A DDP-wrapped model's state dict without the `module.` prefix, loadable by the bare model."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


# ---- data and checkpoints shared by the launched scripts ------------------------------------------

def extraction_lm_blocks(tokenizer, split: str = "train", seq_len: int = 64, max_blocks: int | None = None):
    """The course extraction dialogues (with answers) as one token stream cut into [n, seq_len] blocks.

    Every token carries loss and every block has the same length, so each rank's mean loss covers
    the same number of tokens: the average DDP takes over ranks then equals the mean over the
    concatenated batch, which is what lets a lab assert DDP == single-process training."""
    from common_utils.data import load_course_dataset
    from common_utils.tasks.extraction import extraction_messages

    import torch

    ids: list[int] = []
    for row in load_course_dataset("person_extraction", split):
        text = tokenizer.apply_chat_template(extraction_messages(row, with_answer=True), tokenize=False)
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if max_blocks is not None and len(ids) >= max_blocks * seq_len:
            break
    n = len(ids) // seq_len if max_blocks is None else min(len(ids) // seq_len, max_blocks)
    if n == 0:
        raise ValueError(f"not enough tokens in split {split!r} for one block of {seq_len}")
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)


class _TrainingState:
    """Optimizer state and step count, saved beside the model by save_pretrained_atomic."""

    FILE = "training_state.pt"

    def __init__(self, optimizer, step: int, extra: dict[str, Any] | None = None) -> None:
        self.optimizer, self.step, self.extra = optimizer, step, extra or {}

    def save_pretrained(self, folder: str | Path) -> None:
        import torch

        torch.save({"optimizer": self.optimizer.state_dict(), "step": self.step, "extra": self.extra},
                   Path(folder) / self.FILE)


def save_training_checkpoint(path: str | Path, model, optimizer, step: int, *others: Any,
                             extra: dict[str, Any] | None = None) -> Path:
    """Model (`save_pretrained`, or a state dict for plain nn.Modules), optimizer state and step, written
    atomically. Call it on rank 0 only, then `barrier()`: every rank holds the same weights under DDP."""
    from common_utils.core.artifacts import save_pretrained_atomic

    model = getattr(model, "module", model)  # unwrap DDP
    return save_pretrained_atomic(path, _ModelSaver(model), *others, _TrainingState(optimizer, step, extra))


class _ModelSaver:
    """save_pretrained for both Hugging Face models and plain torch modules."""

    def __init__(self, model) -> None:
        self.model = model

    def save_pretrained(self, folder: str | Path) -> None:
        import torch

        if hasattr(self.model, "save_pretrained"):
            self.model.save_pretrained(folder)
        else:
            torch.save(self.model.state_dict(), Path(folder) / "model.pt")


def load_training_state(path: str | Path, optimizer) -> tuple[int, dict[str, Any]]:
    """Restore the optimizer saved by save_training_checkpoint; returns (step, extra)."""
    import torch

    file = Path(path) / _TrainingState.FILE
    if not file.exists():
        raise FileNotFoundError(f"{file} not found: resume needs a checkpoint written by save_training_checkpoint")
    state = torch.load(file, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), state["extra"]
