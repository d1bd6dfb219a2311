"""GELU variants (exact erf GELU, an exportable polynomial erf, and an ONNX tracing stand-in)."""

from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from .config import GeluKind

# Abramowitz & Stegun 7.1.26: erf(x) ≈ 1 − (a1 t + … + a5 t⁵) e^(−x²), t = 1/(1 + p x), x ≥ 0.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_SQRT2 = math.sqrt(2.0)


def erf_poly(x: Tensor) -> Tensor:
    """erf from exp, mul, add and div only (every op exports to ONNX). |error| ≤ 1.5e-7 in exact
    arithmetic; measured 1.5e-6 in float32 with MindSpore's CPU exp."""
    ax = ops.abs(x)
    t = ops.div(1.0, 1.0 + _AS_P * ax)
    poly = t * (_AS_A[0] + t * (_AS_A[1] + t * (_AS_A[2] + t * (_AS_A[3] + t * _AS_A[4]))))
    y = 1.0 - poly * ops.exp(-(ax * ax))
    return ops.where(x < 0, -y, y)


def gelu(x: Tensor, kind: GeluKind) -> Tensor:
    """Exact (erf) GELU: 0.5·x·(1 + erf(x/√2)). MindSpore's GeLU primitive is the tanh
    approximation (4.7e-4 off), so it is never used here."""
    x = x.astype(ms.float32)
    # written as (0.5·x)·(1 + erf(x / √2)) with a division: the exact form ONNX Runtime's
    # GeluFusion recognises, so an exported graph runs one fused Gelu instead of five ops
    scaled = x / _SQRT2
    if kind == "erf":
        e = ops.erf(scaled)
    elif kind == "poly":
        e = erf_poly(scaled)
    else:  # "onnx_erf": a unary op that exports, renamed to Erf in the ONNX file afterwards
        e = ops.acos(scaled)
    return (x * 0.5) * (1.0 + e)


def quick_gelu(x: Tensor) -> Tensor:
    """OpenAI CLIP's x·sigmoid(1.702·x)."""
    x = x.astype(ms.float32)
    return x * ops.sigmoid(1.702 * x)


class Activation(nn.Cell):
    def __init__(self, act: str, gelu_kind: GeluKind) -> None:
        super().__init__()
        if act not in ("gelu", "quick_gelu"):
            raise ValueError(f"activation {act!r}: expected 'gelu' or 'quick_gelu'")
        self.act = act
        self.gelu_kind = gelu_kind

    def construct(self, x: Tensor) -> Tensor:
        if self.act == "gelu":
            return gelu(x, self.gelu_kind)
        return quick_gelu(x)


def gelu_reference(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
