"""Multi-process training from a notebook: launch scripts with torchrun, and the helpers those scripts share.

A Jupyter kernel cannot be a distributed launcher, so labs keep their training scripts beside the
notebooks and start them from a cell with `launch(...)`. The launcher runs
`python -m torch.distributed.run` on a free port with a hard timeout, captures every rank's output in
one log file, and on failure raises an error that carries the log's tail. Scripts report what they
measured in a JSON file (written atomically) that the notebook reads back to plot and assert.

Inside a script: `init_distributed()` picks the backend (NCCL on CUDA, gloo on CPU) from the
environment torchrun sets, and `finish_distributed()` tears it down.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TROUBLESHOOTING = "docs/troubleshooting.md (section: distributed launches)"


class DistributedLaunchError(RuntimeError):
    """A launched multi-process run failed or timed out; the message carries the log tail and a fix."""


@dataclass
class LaunchResult:
    """What one launch did: the command, its exit code, wall seconds and where its log is."""

    command: list[str]
    returncode: int
    seconds: float
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines)


def tail(path: str | Path, lines: int = 30) -> str:
    """The last `lines` lines of a text file ('' if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def first_error(path: str | Path, lines: int = 25) -> str:
    """The first traceback in a launch log (the root cause; later ones are often ranks torn down after it)."""
    path = Path(path)
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    start = next((i for i, line in enumerate(text) if "Traceback (most recent call last)" in line), None)
    if start is None:
        return ""
    end = next((j + 1 for j in range(start + 1, len(text)) if re.match(r"^(\[rank\d+\]: )?\w+(Error|Exception)\b", text[j])),
               start + lines)
    return "\n".join(text[start:min(end, start + lines)])


def free_port() -> int:
    """A TCP port that is free right now on localhost, so two launches never fight over 29500."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def default_nproc() -> int:
    """Processes per node: one per GPU on CUDA, else 2 CPU processes (what CI's 2 cores can hold)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return 2


def torchrun_command(script: str | Path, nproc: int, args: list[str] | None = None,
                     port: int | None = None) -> list[str]:
    """`python -m torch.distributed.run ...` for one node: the same as `torchrun`, but with this
    interpreter, so the launched processes see the notebook's own environment and packages."""
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1", f"--master_port={port or free_port()}", str(script),
            *[str(a) for a in (args or [])]]


def run_command(command: list[str], log_path: str | Path, timeout_s: float = 300,
                env: dict[str, str] | None = None, cwd: str | Path | None = None) -> LaunchResult:
    """Run a launcher command with its output captured in `log_path` and a hard timeout.

    The launcher gets its own process group; on timeout that group (the launcher and the workers it
    started, all children of this call) is terminated, so nothing outlives the cell. On a non-zero
    exit or a timeout, DistributedLaunchError carries the log tail."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            raise DistributedLaunchError(
                f"launch timed out after {timeout_s:.0f} s and was stopped: {' '.join(command)}\n"
                f"--- last lines of {log_path} ---\n{tail(log_path)}\n"
                f"Fix: a rank is probably waiting in a collective the others never reached (see {TROUBLESHOOTING}); "
                "or raise timeout_s on a slow machine."
            ) from None
    result = LaunchResult(command, returncode, time.perf_counter() - start, log_path)
    if returncode != 0:
        raise DistributedLaunchError(
            f"launch failed with exit code {returncode}: {' '.join(command)}\n"
            f"--- first error in {log_path} ---\n{first_error(log_path) or result.log_tail()}\n"
            f"Fix: read the first traceback in the log (every rank writes to it); see {TROUBLESHOOTING}."
        )
    return result


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the launcher this module started and every process below it (SIGTERM, then SIGKILL).

    torchrun starts each worker in a session of its own, so signalling the launcher's process group
    is not enough if the launcher dies first: the descendants are collected by pid beforehand."""
    import psutil

    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        _, alive = psutil.wait_procs(descendants, timeout=10)
        for child in alive:
            try:
                child.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
        if not [c for c in descendants if c.is_running()]:
            return


def launch(script: str | Path, args: list[str] | None = None, nproc: int | None = None,
           log_path: str | Path | None = None, timeout_s: float = 300,
           env: dict[str, str] | None = None) -> LaunchResult:
    """Launch `script` on `nproc` processes of this machine with torchrun and wait for it.

    Defaults: one process per GPU, or 2 on CPU; the log goes to `outputs/logs/<script>.log`."""
    script = Path(script)
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: launch a script that lives beside the notebook "
                                f"(the working directory is {Path.cwd()})")
    nproc = nproc or default_nproc()
    log_path = Path(log_path or Path("outputs") / "logs" / f"{script.stem}.log")
    return run_command(torchrun_command(script, nproc, args), log_path, timeout_s, env)


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


def ensure_launched(artifact: str | Path, script: str | Path, args: list[str] | None = None,
                    launcher: Any = None, **launch_kwargs: Any) -> Path:
    """Stage independence for launched runs: reuse `artifact` when an earlier stage wrote it,
    otherwise say so and rebuild it by launching the same script that stage used (with `launch`,
    or with `launcher`, e.g. zero_memory.launch_accelerate, called the same way)."""
    artifact = Path(artifact)
    if artifact.exists():
        print(f"reusing {artifact} (written by an earlier stage)")
        return artifact
    print(f"{artifact} is missing: rebuilding it with {script} {' '.join(map(str, args or []))}")
    (launcher or launch)(script, args, **launch_kwargs)
    if not artifact.exists():
        raise FileNotFoundError(f"{script} finished but did not write {artifact}; check its log under outputs/logs/")
    return artifact


# ---- data and checkpoints shared by the launched scripts ------------------------------------------

def extraction_lm_blocks(tokenizer, split: str = "train", seq_len: int = 64, max_blocks: int | None = None):
    """The course extraction dialogues (with answers) as one token stream cut into [n, seq_len] blocks.

    Every token carries loss and every block has the same length, so each rank's mean loss covers
    the same number of tokens: the average DDP takes over ranks then equals the mean over the
    concatenated batch, which is what lets a lab assert DDP == single-process training."""
    import torch

    from .data import extraction_messages, load_course_dataset

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
    from .artifacts import save_pretrained_atomic

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
