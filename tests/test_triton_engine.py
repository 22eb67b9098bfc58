"""The PyTriton helpers of common_utils/inference/engines.py (Lab-2.6), and the process-group cleanup of
service_client.managed_server they rely on. Fast tests start no Triton; the slow one serves SmolLM2 once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from common_utils.inference import engines
from common_utils.inference.engines import (
    EngineNotInstalledError,
    TritonProcess,
    free_ports,
    pytriton_command,
    pytriton_env,
    venv_base_lib,
)
from common_utils.inference.service_client import ServerProcess, stop_group

import pytest

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "02-Efficient_Inference_and_Serving" / "02-Labs" / "Lab-2.6-Triton_Inference_Server"
SERVER_SCRIPT = LAB / "triton_llm_server.py"


def _fake_venv(tmp_path: Path, home: str = "/opt/python/3.11.7/bin") -> Path:
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text(f"home = {home}\ninclude-system-site-packages = false\nversion = 3.11.7\n")
    return venv


def test_venv_base_lib_reads_pyvenv_cfg(tmp_path: Path) -> None:
    assert venv_base_lib(_fake_venv(tmp_path)) == Path("/opt/python/3.11.7/lib")


def test_venv_base_lib_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(EngineNotInstalledError, match="pyvenv.cfg is missing"):
        venv_base_lib(tmp_path)
    (tmp_path / "pyvenv.cfg").write_text("version = 3.11.7\n")
    with pytest.raises(EngineNotInstalledError, match="no `home = ...` line"):
        venv_base_lib(tmp_path)


def test_pytriton_env_puts_the_base_lib_first(tmp_path: Path) -> None:
    venv = _fake_venv(tmp_path)
    assert pytriton_env(venv, {})["LD_LIBRARY_PATH"] == "/opt/python/3.11.7/lib"
    env = pytriton_env(venv, {"LD_LIBRARY_PATH": "/usr/lib/x"})
    assert env["LD_LIBRARY_PATH"] == "/opt/python/3.11.7/lib:/usr/lib/x"
    assert env["HF_HUB_OFFLINE"] == "1"


def test_pytriton_command_appends_the_three_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "engine_python", lambda name: Path(f"/venvs/{name}/bin/python"))
    command = pytriton_command("server.py", (8000, 8001, 8002), ["/models/m", "--max-batch", 4])
    assert command == ["/venvs/triton/bin/python", "server.py", "/models/m", "--max-batch", "4", "--http-port", "8000",
                       "--grpc-port", "8001", "--metrics-port", "8002"]
    with pytest.raises(ValueError, match="three different ports"):
        pytriton_command("server.py", (8000, 8000, 8002))


def test_free_ports_are_distinct() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3 and all(1024 <= p < 65536 for p in ports)


def test_triton_process_urls() -> None:
    server = ServerProcess("http://127.0.0.1:8000", "", Path("x.log"), None, 1.5)  # type: ignore[arg-type]
    triton = TritonProcess(server, 8000, 8001, 8002)
    assert (triton.http_url, triton.grpc_url, triton.metrics_url) == ("127.0.0.1:8000", "127.0.0.1:8001",
                                                                      "http://127.0.0.1:8002")
    assert triton.start_s == 1.5


def test_stop_group_stops_the_whole_group() -> None:
    # a parent in its own session (as managed_server starts servers) with a long-lived child: both must go
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "print(subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']).pid, "
                               "flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(parent.stdout.readline().strip())
    threading.Thread(target=parent.wait, daemon=True).start()  # reap the parent as soon as it dies
    assert _alive(child) and _alive(parent.pid)
    assert stop_group(parent.pid, timeout_s=10) is True
    deadline = time.monotonic() + 10
    while (_alive(child) or _alive(parent.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child) and not _alive(parent.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "Z"
    return state != "Z"


def test_server_script_parses_its_arguments() -> None:
    # the script imports pytriton at the top, so only its argument list is checked here: by reading the source
    source = SERVER_SCRIPT.read_text()
    for flag in ("--max-batch", "--http-port", "--grpc-port", "--metrics-port", "--threads", "--stream",
                 "exit_timeout_secs=5", "signal.SIGTERM", "@batch"):
        assert flag in source, f"{SERVER_SCRIPT.name} lost {flag}"


@pytest.mark.slow
def test_pytriton_serves_one_batched_inference(tmp_path: Path) -> None:
    if not engines.engine_status("triton")[0]:
        pytest.skip(engines.engine_status("triton")[1])
    from common_utils import model_path
    from common_utils.inference.service_client import scrape_metrics

    import numpy as np
    import tritonclient.http as http

    with engines.pytriton_server(SERVER_SCRIPT, [model_path("smollm2-135m-instruct"), "--max-batch", "2"],
                                 models=("llm",), log_path=tmp_path / "triton.log", start_timeout_s=300) as triton:
        client = http.InferenceServerClient(triton.http_url, network_timeout=120)
        assert client.get_model_config("llm")["max_batch_size"] == 2
        prompt = http.InferInput("prompt", [1, 1], "BYTES")
        prompt.set_data_from_numpy(np.array([[b"Say hello."]], dtype=object))
        budget = http.InferInput("max_tokens", [1, 1], "INT32")
        budget.set_data_from_numpy(np.array([[4]], dtype=np.int32))
        result = client.infer("llm", [prompt, budget])
        assert 1 <= int(result.as_numpy("completion_tokens")[0, 0]) <= 4
        assert result.as_numpy("text")[0, 0]
        families = scrape_metrics(triton.metrics_url)
        assert "nv_inference_request_success" in families
        pgid = triton.server.process.pid
    assert triton.server.process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)  # tritonserver and the backend stub are gone too
