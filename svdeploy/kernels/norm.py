"""Normalisation cells with Stability's parameter names (``weight``, ``bias``) and selectable
kernels, plus NumPy references."""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import initializer
from mindspore.ops import operations as P

from .config import GroupNormKind


class GroupNorm(nn.Cell):
    """GroupNorm over (N, C, *) with affine weight/bias, computed in float32.

    Works on any rank ≥ 3: a 5-D video tensor (B, C, T, H, W) is normalised over each
    group's channels and all frames and pixels together, as torch.nn.GroupNorm does.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float,
        kind: GroupNormKind = "native",
        spatial_size: int = 0,
    ) -> None:
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(
                f"GroupNorm: {num_channels} channels are not divisible by {num_groups} groups"
            )
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = float(eps)
        self.kind = kind
        self.weight = Parameter(initializer("ones", (num_channels,), ms.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (num_channels,), ms.float32), name="bias")
        self.layer_norm = P.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=self.eps)

    def construct(self, x: Tensor) -> Tensor:
        shape = x.shape
        n = shape[0]
        x = x.astype(ms.float32)
        if self.kind == "native":
            y = ops.group_norm(
                x.reshape(n, self.num_channels, -1, 1),
                self.num_groups,
                self.weight,
                self.bias,
                self.eps,
            )
            return y.reshape(shape)
        grouped = x.reshape(n, self.num_groups, -1)  # (N, G, C/G · rest)
        if self.kind == "layernorm":
            length = grouped.shape[2]
            ones = ops.ones((length,), ms.float32)
            zeros = ops.zeros((length,), ms.float32)
            normed = self.layer_norm(grouped, ones, zeros)[0]
        else:
            mean = grouped.mean(-1, keep_dims=True)
            centred = grouped - mean
            var = (centred * centred).mean(-1, keep_dims=True)
            normed = centred / ops.sqrt(var + self.eps)
        normed = normed.reshape(n, self.num_channels, -1)  # (N, C, rest)
        y = normed * self.weight.reshape(1, -1, 1) + self.bias.reshape(1, -1, 1)
        return y.reshape(shape)


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis with ``weight``/``bias`` names, float32."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = Parameter(initializer("ones", (dim,), ms.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (dim,), ms.float32), name="bias")
        self.layer_norm = P.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=float(eps))

    def construct(self, x: Tensor) -> Tensor:
        return self.layer_norm(x.astype(ms.float32), self.weight, self.bias)[0]


# ---------------------------------------------------------------------------------------------
# NumPy references (float64)
# ---------------------------------------------------------------------------------------------
def group_norm_reference(
    x: np.ndarray, num_groups: int, weight: np.ndarray, bias: np.ndarray, eps: float
) -> np.ndarray:
    n, c = x.shape[:2]
    g = x.astype(np.float64).reshape(n, num_groups, -1)
    g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    shape = (1, c) + (1,) * (x.ndim - 2)
    return g.reshape(x.shape) * weight.reshape(shape) + bias.reshape(shape)


def layer_norm_reference(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float
) -> np.ndarray:
    x = x.astype(np.float64)
    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return y * weight + bias
