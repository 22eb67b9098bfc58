"""common_utils.core.processes and .training.distributed: launcher command, logs and errors, timeouts, checkpoint round trip.

The multi-process test launches a 10-line script on 2 CPU processes with gloo (a few seconds:
each process imports torch); everything else runs in this process."""

from __future__ import annotations

import socket
import sys
import textwrap
from pathlib import Path

from common_utils import launch
from common_utils.core.processes import (
    DistributedLaunchError,
    ensure_launched,
    first_error,
    free_port,
    run_command,
    torchrun_command,
)
from common_utils.training.distributed import (
    extraction_lm_blocks,
    load_training_state,
    max_abs_diff,
    save_training_checkpoint,
    strip_ddp_prefix,
)

import pytest
import torch


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_torchrun_command_uses_this_interpreter_and_given_port() -> None:
    cmd = torchrun_command("train.py", 2, ["--steps", 3], port=12345)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in cmd and "--master_port=12345" in cmd
    assert cmd[-3:] == ["train.py", "--steps", "3"]
    with pytest.raises(ValueError):
        torchrun_command("train.py", 0)


def test_run_command_captures_log(tmp_path: Path) -> None:
    result = run_command([sys.executable, "-c", "print('hello from a child')"], tmp_path / "ok.log", timeout_s=60)
    assert result.returncode == 0 and "hello from a child" in result.log_tail()


def test_run_command_failure_carries_first_traceback(tmp_path: Path) -> None:
    code = "import sys; print('noise'); raise KeyError('the root cause')"
    with pytest.raises(DistributedLaunchError, match="the root cause"):
        run_command([sys.executable, "-c", code], tmp_path / "fail.log", timeout_s=60)


def test_run_command_timeout_stops_the_process(tmp_path: Path) -> None:
    marker = tmp_path / "still_running"
    code = f"import time; time.sleep(30); open({str(marker)!r}, 'w').write('x')"
    with pytest.raises(DistributedLaunchError, match="timed out"):
        run_command([sys.executable, "-c", code], tmp_path / "slow.log", timeout_s=1)
    assert not marker.exists()


def test_first_error_picks_the_first_rank_traceback(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.write_text("start\n[rank1]: Traceback (most recent call last):\n[rank1]:   File x\n"
                   "[rank1]: ValueError: first\n[rank0]: Traceback (most recent call last):\n[rank0]: KeyError: second\n")
    text = first_error(log)
    assert "ValueError: first" in text and "second" not in text


def test_launch_missing_script_names_the_working_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="beside the notebook"):
        launch(tmp_path / "nope.py")


def test_launch_two_gloo_processes_all_reduce(tmp_path: Path) -> None:
    script = tmp_path / "sum.py"
    script.write_text(textwrap.dedent(f"""
        import torch, torch.distributed as dist
        from common_utils.training.distributed import finish_distributed, init_distributed
        ctx = init_distributed()
        x = torch.tensor([float(ctx.rank + 1)])
        dist.all_reduce(x)
        if ctx.is_main:
            open({str(tmp_path / 'sum.txt')!r}, 'w').write(f"{{x.item()}} {{ctx.world_size}} {{ctx.backend}}")
        finish_distributed()
    """))
    launch(script, nproc=2, log_path=tmp_path / "sum.log", timeout_s=120)
    assert (tmp_path / "sum.txt").read_text() == "3.0 2 gloo"


def test_max_abs_diff_and_prefix() -> None:
    a = {"module.w": torch.zeros(3), "module.b": torch.ones(1)}
    b = {"w": torch.tensor([0.0, 0.5, 0.0]), "b": torch.ones(1)}
    assert max_abs_diff(strip_ddp_prefix(a), b) == 0.5
    with pytest.raises(KeyError):
        max_abs_diff(a, b)


def test_training_checkpoint_round_trip(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    save_training_checkpoint(tmp_path / "ckpt", model, optimizer, 7, extra={"note": "x"})
    assert (tmp_path / "ckpt" / "model.pt").exists()
    restored = torch.optim.AdamW(torch.nn.Linear(4, 2).parameters(), lr=0.1)
    step, extra = load_training_state(tmp_path / "ckpt", restored)
    assert (step, extra) == (7, {"note": "x"})
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    with pytest.raises(FileNotFoundError, match="save_training_checkpoint"):
        load_training_state(tmp_path, restored)


@pytest.mark.slow
def test_extraction_lm_blocks_are_full_length(tiny_lm) -> None:
    _, tokenizer = tiny_lm
    blocks = extraction_lm_blocks(tokenizer, "train", seq_len=32, max_blocks=5)
    assert blocks.shape == (5, 32) and blocks.dtype == torch.long


def test_ensure_launched_reuses_or_rebuilds(tmp_path: Path, capsys) -> None:
    artifact = tmp_path / "artifact.txt"
    script = tmp_path / "make.py"
    script.write_text(f"open({str(artifact)!r}, 'w').write('built')\n")
    assert ensure_launched(artifact, script, nproc=1, log_path=tmp_path / "make.log", timeout_s=120) == artifact
    assert artifact.read_text() == "built" and "not found" in capsys.readouterr().out
    artifact.write_text("kept")
    ensure_launched(artifact, script, nproc=1, log_path=tmp_path / "make.log", timeout_s=120)
    assert artifact.read_text() == "kept" and "reusing" in capsys.readouterr().out


def test_timeout_stops_torchrun_workers(tmp_path: Path) -> None:
    """torchrun puts workers in their own sessions: the timeout must still stop them."""
    import psutil

    script = tmp_path / "hang.py"
    script.write_text("import os, time\nopen(os.environ['PIDFILE'] + os.environ['RANK'], 'w').write(str(os.getpid()))\n"
                      "time.sleep(300)\n")
    with pytest.raises(DistributedLaunchError, match="timed out"):
        launch(script, nproc=2, log_path=tmp_path / "hang.log", timeout_s=20, env={"PIDFILE": str(tmp_path / "pid")})
    pids = [int((tmp_path / f"pid{rank}").read_text()) for rank in range(2) if (tmp_path / f"pid{rank}").exists()]
    assert pids, "the workers never started within the timeout; raise timeout_s in this test"
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
