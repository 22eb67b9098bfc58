from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from common_utils import (
    Timer,
    count_parameters,
    dir_size_mb,
    process_rss_mb,
    read_metrics,
    track_peak_memory,
    write_metrics,
)
from common_utils.core.monitor import MB, ParamCount, cuda_peak_mb

import numpy as np
import pytest
import torch


def test_count_parameters_separates_frozen() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    for parameter in model[0].parameters():
        parameter.requires_grad = False
    counted = count_parameters(model)
    assert counted == ParamCount(trainable=3 * 2 + 2, total=4 * 3 + 3 + 3 * 2 + 2)


def test_param_count_percent() -> None:
    assert ParamCount(25, 100).percent == pytest.approx(25.0)
    assert ParamCount(0, 0).percent == 0.0
    assert str(ParamCount(1_000, 4_000)) == "trainable 1,000 / total 4,000 (25.000%)"


def test_timer_measures_the_block() -> None:
    with Timer() as timer:
        time.sleep(0.05)
    assert 0.05 <= timer.seconds < 2.0


PEAK_PROBE = """
import time, torch
from common_utils import track_peak_memory
from common_utils.core.monitor import MB
with track_peak_memory(interval_s=0.02) as peak:
    block = torch.ones(200 * MB // 4, dtype=torch.float32)  # written, so the pages are resident
    time.sleep(0.3)
    del block
print(peak.rss_increase_mb, peak.start_rss_mb, peak.peak_rss_mb)
"""


def test_track_peak_memory_sees_a_freed_allocation() -> None:
    """The block frees its 200 MB before it ends, so only the background sampler can see the peak.

    It runs in a fresh interpreter: inside the test session, pages freed by earlier tests stay
    resident and the allocator can reuse them, so RSS grew by only 81 MB once in CI.
    """
    probe = subprocess.run([sys.executable, "-c", PEAK_PROBE], capture_output=True, text=True, check=True)
    increase_mb, start_mb, peak_mb = (float(value) for value in probe.stdout.split())
    assert increase_mb > 100, f"peak {peak_mb:.0f} MB, start {start_mb:.0f} MB"


def test_track_peak_memory_reads_cuda_peak() -> None:
    with track_peak_memory(interval_s=0.02) as peak:
        pass
    assert peak.cuda_peak_mb == cuda_peak_mb()
    assert process_rss_mb() > 0


def test_dir_size_mb(tmp_path: Path) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "a.bin").write_bytes(b"\0" * MB)
    (tmp_path / "nested" / "b.bin").write_bytes(b"\0" * (MB // 2))
    assert dir_size_mb(tmp_path) == pytest.approx(1.5)


def test_write_metrics_merges_sections_atomically(tmp_path: Path) -> None:
    path = tmp_path / "outputs" / "metrics.json"
    assert read_metrics(path) == {}
    write_metrics(path, "lora", {"exact_match": 0.9})
    write_metrics(path, "qlora", {"exact_match": 0.8})
    assert write_metrics(path, "lora", {"exact_match": 0.95}) is None, (
        "a cell ending in it must print nothing"
    )
    merged = read_metrics(path)
    expected = {"lora": {"exact_match": 0.95}, "qlora": {"exact_match": 0.8}}
    assert merged == expected
    assert read_metrics(path) == expected == json.loads(path.read_text(encoding="utf-8"))
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"], "no temporary file may be left"


def test_write_metrics_converts_numpy_numbers(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    write_metrics(path, "run", {"loss": np.float32(0.25), "steps": 3})
    assert read_metrics(path) == {"run": {"loss": 0.25, "steps": 3}}


def test_atomic_file_replaces_only_when_the_write_finishes(tmp_path: Path) -> None:
    from common_utils import atomic_file

    target = tmp_path / "sub" / "weights.bin"
    with atomic_file(target) as tmp:
        tmp.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "first"  # the old file survives an interrupted write
    assert sorted(p.name for p in target.parent.iterdir()) == ["weights.bin"]  # no temporary left behind
