"""Measure which CPU convolution kernel is faster on this machine.

MindSpore 2.10's CPU 3×3 convolution is fast on some CPUs and very slow on others: 30–55
GFLOP/s on an AVX2-only EPYC, 0.6–1.2 GFLOP/s on AVX-512 EPYCs (family 25 and 26), where the
im2col variant (shifted windows + one GEMM) runs at 7–19 GFLOP/s. No CPU flag predicts it
reliably, so ``svd-export --conv auto`` times both on one representative convolution.
"""

from __future__ import annotations

import functools
import time
from typing import Dict, Tuple

import numpy as np

PROBE_SHAPE = (4, 64, 32, 32)  # (N, C, H, W): a mid-size U-Net / VAE level, 0.3 GFLOP per call


def _best_seconds(conv, x, repeats: int) -> float:
    conv(x).asnumpy()  # warm-up (compiles in GRAPH_MODE)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        conv(x).asnumpy()
        best = min(best, time.perf_counter() - started)
    return best


@functools.lru_cache(maxsize=None)
def _probe(repeats: int) -> Tuple[Tuple[str, float], ...]:
    from mindspore import Tensor

    from .linear import Conv2d

    n, c, h, w = PROBE_SHAPE
    x = Tensor(np.random.default_rng(0).standard_normal((n, c, h, w)).astype(np.float32))
    timings = []
    for kind in ("native", "im2col"):
        conv = Conv2d(c, c, 3, padding=1, kind=kind)  # type: ignore[arg-type]
        timings.append((kind, _best_seconds(conv, x, repeats)))
    return tuple(timings)


def conv_probe(repeats: int = 3) -> Dict[str, float]:
    """Seconds per call of a 3×3, 64→64 convolution on (4, 64, 32, 32), per kernel kind, in the
    current MindSpore context; measured once per process."""
    return dict(_probe(repeats))


def fastest_conv(repeats: int = 3) -> str:
    """``native`` or ``im2col``, whichever ran the probe convolution faster here."""
    timings = conv_probe(repeats)
    return min(timings, key=timings.__getitem__)
