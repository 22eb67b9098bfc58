"""Starting, watching and stopping processes from a notebook: torchrun launches (DDP, DeepSpeed),
later servers and engines. A Jupyter kernel cannot be a distributed launcher, so labs keep their
scripts beside the notebooks and start them from a cell with `launch(...)`: a free port, a hard
timeout, every rank's output in one log file, and on failure an error that carries the log's tail.
Scripts report what they measured in a JSON file (written atomically) that the notebook reads back.
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

from common_utils.core.artifacts import ensure

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


def stop_process(process: subprocess.Popen, timeout_s: float = 15.0) -> int:
    """SIGTERM (servers and launchers shut down gracefully), then SIGKILL if it is still running after
    `timeout_s`; the process is reaped either way. Returns its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)
    return process.returncode


def stop_group(pgid: int, timeout_s: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after `timeout_s`, whatever is still running in process group `pgid`.
    Launchers and servers started here get a session of their own (their pid is the group id), so the group
    holds the children they left behind (PyTriton's tritonserver, vLLM's engine core). True when something
    was still running."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the launcher this module started and every process below it: the launcher, then what is left
    in its process group, then descendants elsewhere.

    torchrun starts each worker in a session of its own, so signalling the launcher's process group
    is not enough if the launcher dies first: the descendants are collected by pid beforehand."""
    import psutil

    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    stop_process(proc, timeout_s=10)
    stop_group(proc.pid)
    _, alive = psutil.wait_procs(descendants, timeout=10)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


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


def ensure_launched(artifact: str | Path, script: str | Path, args: list[str] | None = None,
                    launcher: Any = None, **launch_kwargs: Any) -> Path:
    """`ensure` for launched runs: reuse `artifact`, or rebuild it by launching the same script the
    earlier stage used (with `launch`, or with `launcher`, e.g. launch_accelerate, called the same way)."""
    return ensure(artifact, lambda: (launcher or launch)(script, args, **launch_kwargs),
                  made_by=f"{Path(script).name} {' '.join(map(str, args or []))}".strip())
