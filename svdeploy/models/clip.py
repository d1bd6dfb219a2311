"""OpenCLIP's vision transformer (ViT-H/14 in SVD) with its output projection.

Parameter names as under ``conditioner.embedders.0.open_clip.model.visual.`` in Stability's
checkpoint. The output is projection(ln_post(CLS token)), not L2-normalised: SVD uses it as the
U-Net's one-token cross-attention context.
"""

from __future__ import annotations

import math

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer
from mindspore.ops import operations as P

from svdeploy.config import ImageEncoderConfig
from svdeploy.kernels.activation import Activation
from svdeploy.kernels.attention import Attention
from svdeploy.kernels.config import KernelConfig
from svdeploy.kernels.linear import Conv2d, Linear, ms_dtype
from svdeploy.kernels.norm import LayerNorm


class MultiheadSelfAttention(nn.Cell):
    """torch.nn.MultiheadAttention layout: packed ``in_proj_weight`` (3·W, W) in q, k, v order."""

    def __init__(self, width: int, heads: int, kernels: KernelConfig) -> None:
        super().__init__()
        self.width = width
        self.heads = heads
        bound = 1.0 / math.sqrt(width)
        self.in_proj_weight = Parameter(
            initializer(Normal(bound), (3 * width, width), ms.float32), name="in_proj_weight"
        )
        self.in_proj_bias = Parameter(
            initializer("zeros", (3 * width,), ms.float32), name="in_proj_bias"
        )
        self.out_proj = Linear(width, width, compute_dtype=kernels.compute_dtype)
        self.dtype = ms_dtype(kernels.compute_dtype)
        self.attend = Attention(heads, width // heads, kernels.attention, self.dtype)
        self.matmul = P.MatMul(transpose_b=True)

    def construct(self, x: Tensor) -> Tensor:
        n, length, width = x.shape
        qkv = self.matmul(
            x.reshape(-1, width).astype(self.dtype), self.in_proj_weight.astype(self.dtype)
        ).astype(ms.float32)
        qkv = (qkv + self.in_proj_bias).reshape(n, length, 3 * width)
        q = qkv[:, :, :width]
        k = qkv[:, :, width : 2 * width]
        v = qkv[:, :, 2 * width :]
        return self.out_proj(self.attend(q, k, v))


class Mlp(nn.Cell):
    def __init__(self, width: int, mlp_width: int, act: str, kernels: KernelConfig) -> None:
        super().__init__()
        self.c_fc = Linear(width, mlp_width, compute_dtype=kernels.compute_dtype)
        self.gelu = Activation(act, kernels.gelu)
        self.c_proj = Linear(mlp_width, width, compute_dtype=kernels.compute_dtype)

    def construct(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Cell):
    def __init__(self, cfg: ImageEncoderConfig, kernels: KernelConfig) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(cfg.width, cfg.layer_norm_eps)
        self.attn = MultiheadSelfAttention(cfg.width, cfg.heads, kernels)
        self.ln_2 = LayerNorm(cfg.width, cfg.layer_norm_eps)
        self.mlp = Mlp(cfg.width, cfg.mlp_width, cfg.act, kernels)

    def construct(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Cell):
    def __init__(self, cfg: ImageEncoderConfig, kernels: KernelConfig) -> None:
        super().__init__()
        self.resblocks = nn.CellList(
            [ResidualAttentionBlock(cfg, kernels) for _ in range(cfg.layers)]
        )

    def construct(self, x: Tensor) -> Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class ImageEncoder(nn.Cell):
    """(N, 3, 224, 224) CLIP-normalised pixels → (N, embed_dim) image embedding."""

    def __init__(self, cfg: ImageEncoderConfig, kernels: KernelConfig = KernelConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        grid = cfg.image_size // cfg.patch_size
        scale = cfg.width**-0.5
        self.conv1 = Conv2d(
            3,
            cfg.width,
            cfg.patch_size,
            stride=cfg.patch_size,
            bias=False,
            compute_dtype=kernels.compute_dtype,
            kind=kernels.conv,
        )
        self.class_embedding = Parameter(
            initializer(Normal(scale), (cfg.width,), ms.float32), name="class_embedding"
        )
        self.positional_embedding = Parameter(
            initializer(Normal(scale), (grid * grid + 1, cfg.width), ms.float32),
            name="positional_embedding",
        )
        self.ln_pre = LayerNorm(cfg.width, cfg.layer_norm_eps)
        self.transformer = Transformer(cfg, kernels)
        self.ln_post = LayerNorm(cfg.width, cfg.layer_norm_eps)
        self.proj = Parameter(
            initializer(Normal(scale), (cfg.width, cfg.embed_dim), ms.float32), name="proj"
        )
        self.dtype = ms_dtype(kernels.compute_dtype)

    def construct(self, pixels: Tensor) -> Tensor:
        x = self.conv1(pixels)  # (N, W, g, g)
        n, width = x.shape[0], x.shape[1]
        x = x.reshape(n, width, -1).transpose(0, 2, 1)  # (N, g², W)
        cls = ops.broadcast_to(self.class_embedding.reshape(1, 1, width), (n, 1, width))
        x = ops.concat((cls, x), 1) + self.positional_embedding  # (N, 1 + g², W)
        x = self.transformer(self.ln_pre(x))
        pooled = self.ln_post(x[:, 0])  # (N, W)
        return ops.matmul(pooled.astype(self.dtype), self.proj.astype(self.dtype)).astype(
            ms.float32
        )
