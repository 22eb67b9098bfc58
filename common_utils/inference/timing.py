"""Interleaved timing: compare two ways of doing the same work on a busy machine.

On a shared 2-core box a run's speed drifts by 2-3x within minutes. Timing A five times and then B
five times puts the drift into the comparison. Interleaving (A, B, A, B, ...) exposes both to the same
load, and the median of the per-round ratios (a paired comparison) resists the outlier rounds. This is
how every speed-up of chapter 02 is measured: as a ratio from one run, never as an absolute speed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from common_utils.core.monitor import synchronize_cuda


@dataclass
class InterleavedTimes:
    """Seconds per round for each candidate, all measured in the same interleaved rounds."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratio(self, slow: str, fast: str) -> float:
        """Median over rounds of seconds(slow) / seconds(fast): how many times faster `fast` is, paired
        round by round so both sides of each ratio saw the same machine load."""
        return statistics.median(s / f for s, f in zip(self.seconds[slow], self.seconds[fast], strict=True))

    def medians(self) -> dict[str, float]:
        return {name: self.median(name) for name in self.seconds}


def interleaved_times(candidates: Mapping[str, Callable[[], object]], repeats: int,
                      warmup: int = 1) -> InterleavedTimes:
    """Run every candidate once per round, `repeats` rounds, after `warmup` untimed rounds; returns
    each candidate's wall time per round. Candidates run in the given order inside a round."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not candidates:
        raise ValueError("give at least one candidate to time")
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    result = InterleavedTimes({name: [] for name in candidates})
    for _ in range(repeats):
        for name, fn in candidates.items():
            synchronize_cuda()
            start = time.perf_counter()
            fn()
            synchronize_cuda()
            result.seconds[name].append(time.perf_counter() - start)
    return result
