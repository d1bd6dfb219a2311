"""Timing statistics of svd-bench: medians, percentiles and CPU time of repeated calls."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------
@dataclass
class Stats:
    """Seconds of repeated runs (after warm-up): median and the 10th / 90th percentiles, and the
    process CPU seconds of the same runs when recorded."""

    samples: List[float]
    cpu_samples: Optional[List[float]] = None

    @property
    def cpu_per_wall(self) -> Optional[float]:
        """Cores kept busy during the timed runs: about the thread count on an idle machine,
        less when other processes took the cores (the wall times are then inflated)."""
        if not self.cpu_samples or not sum(self.samples):
            return None
        return sum(self.cpu_samples) / sum(self.samples)

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return float(np.median(self.samples)) if self.samples else float("nan")

    @property
    def p10(self) -> float:
        return float(np.percentile(self.samples, 10)) if self.samples else float("nan")

    @property
    def p90(self) -> float:
        return float(np.percentile(self.samples, 90)) if self.samples else float("nan")

    @property
    def min(self) -> float:
        return float(min(self.samples)) if self.samples else float("nan")

    def to_json(self) -> Dict[str, Any]:
        out = {
            "n": self.n,
            "median_s": self.median,
            "p10_s": self.p10,
            "p90_s": self.p90,
            "min_s": self.min,
            "samples_s": [round(s, 6) for s in self.samples],
        }
        if self.cpu_samples is not None:
            out["cpu_s"] = [round(s, 6) for s in self.cpu_samples]
            out["cpu_per_wall"] = self.cpu_per_wall
        return out


def time_repeated(
    fn: Callable[[], Any], repeats: int, warmup: int, budget_s: Optional[float] = None
) -> Stats:
    """Run ``fn`` ``warmup`` times untimed, then up to ``repeats`` timed runs. With a budget,
    timed runs stop once it is spent (at least 3 are kept); the sample count is reported, so a
    cut-short measurement is visible."""
    for _ in range(warmup):
        fn()
    samples: List[float] = []
    cpu: List[float] = []
    started = time.perf_counter()
    for i in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if budget_s is not None and i + 1 >= 3 and time.perf_counter() - started > budget_s:
            break
    return Stats(samples, cpu)


__all__ = ["Stats", "time_repeated"]
