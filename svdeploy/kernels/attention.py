"""Multi-head scaled dot-product attention variants, and a NumPy reference."""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from .config import AttentionKind


def _split_heads(x: Tensor, heads: int) -> Tensor:
    b, n, inner = x.shape
    return x.reshape(b, n, heads, inner // heads).transpose(0, 2, 1, 3)  # (B, heads, N, d)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    heads: int,
    kind: AttentionKind,
    compute_dtype: ms.Type = ms.float32,
) -> Tensor:
    """softmax(q·kᵀ/√d)·v per head. q: (B, Nq, heads·d); k, v: (B, Nk, heads·d) → (B, Nq, heads·d).

    Scores and softmax are float32 whatever the compute dtype of the two matmuls.
    """
    b, nq, inner = q.shape
    d = inner // heads
    scale = float(d) ** -0.5
    if kind == "ascend_fa":
        # Ascend-only fused kernel (BSH layout). MindSpore has no CPU/GPU implementation, so
        # this path cannot run or be checked on this machine.
        out = ops.flash_attention_score(
            q.astype(ms.float16),
            k.astype(ms.float16),
            v.astype(ms.float16),
            heads,
            input_layout="BSH",
            scalar_value=scale,
        )
        return out.astype(ms.float32)
    qh = _split_heads(q, heads).astype(compute_dtype)
    kh = _split_heads(k, heads).astype(compute_dtype)
    vh = _split_heads(v, heads).astype(compute_dtype)
    scores = ops.matmul(qh, kh.transpose(0, 1, 3, 2)).astype(ms.float32) * scale  # (B,h,Nq,Nk)
    probs = ops.softmax(scores, -1)
    out = ops.matmul(probs.astype(compute_dtype), vh).astype(ms.float32)  # (B, h, Nq, d)
    return out.transpose(0, 2, 1, 3).reshape(b, nq, inner)


def attention_reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int) -> np.ndarray:
    b, nq, inner = q.shape
    d = inner // heads

    def split(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float64).reshape(b, x.shape[1], heads, d).transpose(0, 2, 1, 3)

    qh, kh, vh = split(q), split(k), split(v)
    s = qh @ kh.transpose(0, 1, 3, 2) / np.sqrt(d)
    s = np.exp(s - s.max(-1, keepdims=True))
    p = s / s.sum(-1, keepdims=True)
    return (p @ vh).transpose(0, 2, 1, 3).reshape(b, nq, inner)
