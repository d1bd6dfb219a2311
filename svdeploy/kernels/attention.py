"""Multi-head scaled dot-product attention variants, and a NumPy reference."""

from __future__ import annotations

from typing import Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.ops import operations as P

from .config import AttentionKind


def _split_heads(x: Tensor, heads: int) -> Tensor:
    b, n, inner = x.shape
    return x.reshape(b, n, heads, inner // heads).transpose(0, 2, 1, 3)  # (B, heads, N, d)


def _merge_heads(x: Tensor) -> Tensor:
    b, heads, n, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, n, heads * d)  # (B, N, heads·d)


def softmax_scale(dim_head: int) -> float:
    """1/√d, the scale of the attention scores (d: the head width)."""
    return float(dim_head) ** -0.5


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    heads: int,
    kind: AttentionKind,
    compute_dtype: ms.Type = ms.float32,
) -> Tensor:
    """softmax(q·kᵀ/√d)·v per head. q: (B, Nq, heads·d); k, v: (B, Nk, heads·d) → (B, Nq, heads·d).

    Scores and softmax are float32 whatever the compute dtype of the two matmuls. ``bmm_grad``
    computes as ``bmm`` here; its hand-written backward lives in :class:`Attention`.
    """
    scale = softmax_scale(q.shape[-1] // heads)
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
    return _merge_heads(out)


class _HeadsAttention(nn.Cell):
    """softmax(q·kᵀ·scale)·v over split heads, (B, h, N, d), with a hand-written backward.

    MindSpore's automatic backward of the ``bmm`` form transposes the (B, h, Nq, Nk) score
    gradient three times and reduces it along its last axis (SoftmaxGrad), which took 0.2 s of
    a 0.5 s tiny U-Net training step (1,024 tokens; MindSpore 2.10 CPU). Here the transposes
    are BatchMatMul flags, and the softmax backward uses FlashAttention's identity
    Σⱼ Pᵢⱼ·dPᵢⱼ = dOᵢ·Oᵢ, a reduction over d instead of Nk:

        dV = Pᵀ·dO    dP = dO·Vᵀ    dS = P ⊙ (dP − rowsum(dO ⊙ O))    dQ = dS·K·s    dK = dSᵀ·(Q·s)
    """

    def __init__(self, scale: float, compute_dtype: ms.Type) -> None:
        super().__init__()
        self.scale = scale
        self.dtype = compute_dtype
        self.nn = P.BatchMatMul()
        self.nt = P.BatchMatMul(transpose_b=True)
        self.tn = P.BatchMatMul(transpose_a=True)

    def construct(self, q: Tensor, k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
        # the scale goes on q (N·d values), not on the N·N scores: one pass over them fewer
        scores = self.nt(q * self.scale, k).astype(ms.float32)  # (B, h, Nq, Nk)
        probs = ops.softmax(scores, -1)
        out = self.nn(probs.astype(self.dtype), v).astype(ms.float32)  # (B, h, Nq, d)
        return out, probs  # probs only for bprop (no caller differentiates it)

    def bprop(self, q: Tensor, k: Tensor, v: Tensor, out: Tuple, dout: Tuple) -> Tuple:
        o, probs = out
        do = dout[0].astype(ms.float32)
        dv = self.tn(probs.astype(self.dtype), do.astype(self.dtype)).astype(v.dtype)
        dp = self.nt(do.astype(self.dtype), v).astype(ms.float32)  # (B, h, Nq, Nk)
        rows = (do * o).sum(-1, keepdims=True)  # (B, h, Nq, 1)
        ds = (probs * (dp - rows)).astype(self.dtype)  # gradient of the scores
        dq = (self.nn(ds, k) * self.scale).astype(q.dtype)
        dk = self.tn(ds, q * self.scale).astype(k.dtype)
        return dq, dk, dv


class Attention(nn.Cell):
    """:func:`attention` as a cell, for models: the ``bmm_grad`` kind (training) keeps its
    hand-written backward in a child cell; the other kinds call the function."""

    def __init__(self, heads: int, dim_head: int, kind: AttentionKind, compute_dtype: ms.Type):
        super().__init__()
        self.heads = heads
        self.kind = kind
        self.dtype = compute_dtype
        # only the bmm_grad kind runs the child cell (its branch is resolved when compiling)
        self.core = (
            _HeadsAttention(softmax_scale(dim_head), compute_dtype) if kind == "bmm_grad" else None
        )

    def construct(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.kind != "bmm_grad":
            return attention(q, k, v, self.heads, self.kind, self.dtype)
        qh = _split_heads(q, self.heads).astype(self.dtype)
        kh = _split_heads(k, self.heads).astype(self.dtype)
        vh = _split_heads(v, self.heads).astype(self.dtype)
        out = self.core(qh, kh, vh)[0]  # (B, h, Nq, d)
        return _merge_heads(out)


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
