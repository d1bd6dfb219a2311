"""Building blocks shared by the SVD networks (sgm ``attention.py`` / ``util.py`` equivalents)."""

from __future__ import annotations

import math
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.ops import operations as P

from svdeploy.kernels.activation import gelu
from svdeploy.kernels.attention import Attention
from svdeploy.kernels.config import KernelConfig
from svdeploy.kernels.linear import Linear, ms_dtype
from svdeploy.kernels.norm import LayerNorm


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [cos(t·f), sin(t·f)], f_i = max_period^(−i/half) (sgm util).

    t: (N,) float → (N, dim).
    """
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half, dtype=np.float32) / half)
    args = t.astype(ms.float32).reshape(-1, 1) * Tensor(freqs.astype(np.float32)).reshape(1, -1)
    emb = ops.concat((ops.cos(args), ops.sin(args)), -1)
    if dim % 2:
        emb = ops.concat((emb, ops.zeros((emb.shape[0], 1), ms.float32)), -1)
    return emb


class MixFactor(nn.Cell):
    """sgm AlphaBlender with merge_strategy learned_with_images: a single learned logit.

    SVD inference never passes image-only batches, so alpha = sigmoid(mix_factor).
    """

    def __init__(self, init: float = 0.5) -> None:
        super().__init__()
        logit = math.log(init / (1.0 - init)) if 0.0 < init < 1.0 else 0.0
        self.mix_factor = Parameter(Tensor(np.array([logit], np.float32)), name="mix_factor")

    def construct(self, x_spatial: Tensor, x_temporal: Tensor) -> Tensor:
        alpha = ops.sigmoid(self.mix_factor)
        return alpha * x_spatial + (1.0 - alpha) * x_temporal


class GEGLU(nn.Cell):
    """proj → (value, gate) halves → value·gelu(gate).

    The two halves are computed as two matmuls against the halves of ``proj.weight`` rather
    than one matmul and a split: identical math, but no copy of the 2·inner-wide result (the
    split was 8% of an ONNX Runtime U-Net call on the mid preset).
    """

    def __init__(self, dim_in: int, dim_out: int, kernels: KernelConfig) -> None:
        super().__init__()
        self.proj = Linear(dim_in, dim_out * 2, compute_dtype=kernels.compute_dtype)
        self.dim_in = dim_in
        self.dim_out = dim_out
        self.gelu_kind = kernels.gelu
        self.dtype = ms_dtype(kernels.compute_dtype)
        self.matmul = P.MatMul(transpose_b=True)

    def construct(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.dim_in).astype(self.dtype)  # (N, in)
        w = self.proj.weight.astype(self.dtype)
        b = self.proj.bias
        value = self.matmul(flat, w[: self.dim_out]).astype(ms.float32) + b[: self.dim_out]
        gate = self.matmul(flat, w[self.dim_out :]).astype(ms.float32) + b[self.dim_out :]
        out = value * gelu(gate, self.gelu_kind)  # (N, dim_out)
        return out.reshape(lead + (self.dim_out,))


class FeedForward(nn.Cell):
    """sgm FeedForward with glu=True: net.0 = GEGLU(dim → 4·dim), net.2 = Linear(4·dim → out)."""

    def __init__(
        self, dim: int, dim_out: Optional[int], kernels: KernelConfig, mult: int = 4
    ) -> None:
        super().__init__()
        inner = dim * mult
        self.net = nn.CellList(
            [
                GEGLU(dim, inner, kernels),
                nn.Dropout(p=0.0),
                Linear(inner, dim_out or dim, compute_dtype=kernels.compute_dtype),
            ]
        )

    def construct(self, x: Tensor) -> Tensor:
        return self.net[2](self.net[0](x))


class CrossAttention(nn.Cell):
    """sgm CrossAttention: to_q/to_k/to_v without bias, to_out.0 with bias.

    With ``single_token`` (and a context of one token) the softmax over the single key is
    exactly 1, so the output is to_out(to_v(context)) broadcast over the queries; to_q and
    to_k are then not evaluated. The caller decides, since only it knows the context length.
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        dim_head: int,
        kernels: KernelConfig,
        context_dim: Optional[int] = None,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        cd = kernels.compute_dtype
        self.heads = heads
        self.to_q = Linear(query_dim, inner, bias=False, compute_dtype=cd)
        self.to_k = Linear(context_dim, inner, bias=False, compute_dtype=cd)
        self.to_v = Linear(context_dim, inner, bias=False, compute_dtype=cd)
        self.to_out = nn.CellList([Linear(inner, query_dim, compute_dtype=cd), nn.Dropout(p=0.0)])
        self.attend = Attention(heads, dim_head, kernels.attention, ms_dtype(cd))

    def construct(self, x: Tensor, context: Tensor) -> Tensor:
        q = self.to_q(x)
        k = self.to_k(context)
        v = self.to_v(context)
        return self.to_out[0](self.attend(q, k, v))

    def single_token(self, context: Tensor) -> Tensor:
        """Output for a one-token context, (N, 1, D) → (N, 1, query_dim); broadcast by caller."""
        return self.to_out[0](self.to_v(context))


class BasicTransformerBlock(nn.Cell):
    """Spatial block over tokens of one frame: self-attn, cross-attn to the context, GEGLU FF."""

    def __init__(
        self, dim: int, heads: int, dim_head: int, context_dim: int, kernels: KernelConfig
    ) -> None:
        super().__init__()
        self.attn1 = CrossAttention(dim, heads, dim_head, kernels)
        self.ff = FeedForward(dim, None, kernels)
        self.attn2 = CrossAttention(dim, heads, dim_head, kernels, context_dim=context_dim)
        self.norm1 = LayerNorm(dim)
        self.norm2 = LayerNorm(dim)
        self.norm3 = LayerNorm(dim)
        self.single_token = kernels.single_token_cross_attention

    def construct(self, x: Tensor, context: Tensor) -> Tensor:
        h = self.norm1(x)
        x = self.attn1(h, h) + x
        if self.single_token and context.shape[1] == 1:
            x = self.attn2.single_token(context) + x  # (N, 1, C) broadcast over tokens
        else:
            x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class VideoTransformerBlock(nn.Cell):
    """Temporal block: attends over frames at each pixel (sgm VideoTransformerBlock with
    ff_in=True, inner_dim = dim, cross-attention to the first frame's context)."""

    def __init__(
        self, dim: int, heads: int, dim_head: int, context_dim: int, kernels: KernelConfig
    ) -> None:
        super().__init__()
        self.norm_in = LayerNorm(dim)
        self.ff_in = FeedForward(dim, dim, kernels)
        self.attn1 = CrossAttention(dim, heads, dim_head, kernels)
        self.ff = FeedForward(dim, dim, kernels)
        self.norm2 = LayerNorm(dim)
        self.attn2 = CrossAttention(dim, heads, dim_head, kernels, context_dim=context_dim)
        self.norm1 = LayerNorm(dim)
        self.norm3 = LayerNorm(dim)
        self.single_token = kernels.single_token_cross_attention

    def construct(self, x: Tensor, time_context: Tensor, batch: int) -> Tensor:
        """x: (b·s, t, C) tokens of one pixel over frames; time_context: (b, L, D), shared by
        every pixel of video b."""
        n, t, c = x.shape
        x = self.ff_in(self.norm_in(x)) + x
        h = self.norm1(x)
        x = self.attn1(h, h) + x
        if self.single_token and time_context.shape[1] == 1:
            per_video = self.attn2.single_token(time_context)  # (b, 1, C)
            x = (x.reshape(batch, n // batch, t, c) + per_video.reshape(batch, 1, 1, c)).reshape(
                n, t, c
            )
        else:
            pixels = n // batch
            ctx = ops.broadcast_to(
                time_context.reshape(batch, 1, time_context.shape[1], -1),
                (batch, pixels, time_context.shape[1], time_context.shape[2]),
            )
            ctx = ctx.reshape(n, time_context.shape[1], time_context.shape[2])  # (b·s, L, D)
            x = self.attn2(self.norm2(x), ctx) + x
        return self.ff(self.norm3(x)) + x
