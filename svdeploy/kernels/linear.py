"""Linear and convolution cells with Stability's parameter names and a compute precision.

Weights are stored in float32 (the checkpoint's values); with ``compute_dtype`` fp16/bf16 the
inputs and weights are cast for the matmul / convolution and the result is returned in float32,
so norms, softmax and residual sums stay float32.
"""

from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Uniform, initializer
from mindspore.ops import operations as P

from .config import ComputeDtype, ConvKind, PadKind, TemporalConvKind

MS_DTYPES = {"fp32": ms.float32, "fp16": ms.float16, "bf16": ms.bfloat16}


def ms_dtype(compute_dtype: ComputeDtype) -> ms.Type:
    return MS_DTYPES[compute_dtype]


def _init_weight(shape: tuple, fan_in: int) -> Parameter:
    # torch's default (kaiming uniform, a=√5) bound: 1/√fan_in. Random init only matters for
    # tests and benchmarks; real weights come from a checkpoint.
    return Parameter(
        initializer(Uniform(1.0 / math.sqrt(max(fan_in, 1))), shape, ms.float32), name="weight"
    )


def _init_bias(n: int, fan_in: int) -> Parameter:
    return Parameter(
        initializer(Uniform(1.0 / math.sqrt(max(fan_in, 1))), (n,), ms.float32), name="bias"
    )


class Linear(nn.Cell):
    """y = x·Wᵀ + b over the last axis; weight (out, in) as in torch."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        compute_dtype: ComputeDtype = "fp32",
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = _init_weight((out_features, in_features), in_features)
        self.has_bias = bias
        self.bias = _init_bias(out_features, in_features) if bias else None
        self.dtype = ms_dtype(compute_dtype)
        self.matmul = P.MatMul(transpose_b=True)

    def construct(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).astype(self.dtype)  # (N, in)
        y = self.matmul(flat, self.weight.astype(self.dtype)).astype(ms.float32)
        if self.has_bias:
            y = y + self.bias
        return y.reshape(lead + (self.out_features,))


class Conv2d(nn.Cell):
    """2-D convolution with symmetric padding; weight (out, in, k, k)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        compute_dtype: ComputeDtype = "fp32",
        kind: ConvKind = "native",
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        fan_in = in_channels * kernel_size * kernel_size
        self.weight = _init_weight((out_channels, in_channels, kernel_size, kernel_size), fan_in)
        self.has_bias = bias
        self.bias = _init_bias(out_channels, fan_in) if bias else None
        self.dtype = ms_dtype(compute_dtype)
        # k² shifted windows for small kernels; a non-overlapping patch conv (stride = kernel,
        # e.g. CLIP's patch embedding) is a reshape + GEMM instead
        self.patchify = (
            kind == "im2col" and kernel_size > 1 and stride == kernel_size and not padding
        )
        self.im2col = kind == "im2col" and kernel_size > 1 and not self.patchify
        self.matmul = P.MatMul(transpose_b=True)
        # attributes as tuples: MindSpore's ONNX exporter fails on integer ones
        self.conv = P.Conv2D(
            out_channel=out_channels,
            kernel_size=(kernel_size, kernel_size),
            pad_mode="pad" if padding else "valid",
            pad=(padding,) * 4,
            stride=(stride, stride),
        )
        self.pointwise = P.Conv2D(out_channel=out_channels, kernel_size=(1, 1), stride=(1, 1))

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_conv(x)

    def forward_conv(self, x: Tensor) -> Tensor:
        x = x.astype(self.dtype)
        w = self.weight.astype(self.dtype)
        if self.patchify:
            y = self._patch_conv(x, w)
        elif self.im2col:
            y = self.pointwise(self._columns(x), self._column_weight(w))
        else:
            y = self.conv(x, w)
        y = y.astype(ms.float32)
        if self.has_bias:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return y

    def _columns(self, x: Tensor) -> Tensor:
        """(N, C, H, W) → (N, C·k², Ho, Wo): MindSpore's Im2Col (``ops.unfold``), channel-major
        like the (O, C, k, k) weight. Measured on an AVX-512 EPYC (MindSpore 2.10, (32,64,16,16)
        3×3): Im2Col 29 ms forward, where k² strided slices concatenated took 350 ms and the
        native 3×3 Conv2D 1.7 s; its gradient (Col2Im) is as quick, so training uses it too."""
        k, s, p = self.kernel_size, self.stride, self.padding
        n, c, h, w = x.shape
        ho = (h + 2 * p - k) // s + 1
        wo = (w + 2 * p - k) // s + 1
        if self.dtype == ms.bfloat16:
            # MindSpore 2.10 makes padding fill values with ScalarToTensor, which refuses
            # bfloat16: gather the windows in float32 and cast back (exact)
            cols = ops.unfold(x.astype(ms.float32), kernel_size=k, padding=p, stride=s)
            return cols.astype(self.dtype).reshape(n, c * k * k, ho, wo)
        return ops.unfold(x, kernel_size=k, padding=p, stride=s).reshape(n, c * k * k, ho, wo)

    def _patch_conv(self, x: Tensor, w: Tensor) -> Tensor:
        n, c, h, wd = x.shape
        k = self.kernel_size
        gh, gw = h // k, wd // k
        x = x[:, :, : gh * k, : gw * k].reshape(n, c, gh, k, gw, k)
        x = x.transpose(0, 2, 4, 1, 3, 5).reshape(n * gh * gw, c * k * k)  # one row per patch
        y = self.matmul(x, w.reshape(self.out_channels, c * k * k))  # (N·gh·gw, O)
        return y.reshape(n, gh, gw, self.out_channels).transpose(0, 3, 1, 2)

    def _column_weight(self, w: Tensor) -> Tensor:
        # (O, C, k, k) → (O, C·k², 1, 1), the channel-major window order of _columns
        k = self.kernel_size
        return w.reshape(self.out_channels, self.in_channels * k * k, 1, 1)


class TemporalConv(nn.Cell):
    """Convolution over frames only: sgm's Conv3d with kernel (k, 1, 1), padding (k//2, 0, 0).

    Input and output (B, C, T, P) with P = H·W pixels. Weight keeps the checkpoint's 5-D shape
    (out, in, k, 1, 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        kind: TemporalConvKind = "conv3d",
        compute_dtype: ComputeDtype = "fp32",
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.kind = kind
        fan_in = in_channels * kernel_size
        self.weight = _init_weight((out_channels, in_channels, kernel_size, 1, 1), fan_in)
        self.bias = _init_bias(out_channels, fan_in)
        self.dtype = ms_dtype(compute_dtype)
        half = kernel_size // 2
        self.conv3d = P.Conv3D(
            out_channel=out_channels,
            kernel_size=(kernel_size, 1, 1),
            pad_mode="pad",
            pad=(half, half, 0, 0, 0, 0),
        )
        self.conv2d = P.Conv2D(
            out_channel=out_channels, kernel_size=(kernel_size, 1), pad_mode="valid", stride=(1, 1)
        )
        self.pointwise = P.Conv2D(out_channel=out_channels, kernel_size=(1, 1), stride=(1, 1))

    def construct(self, x: Tensor) -> Tensor:
        b, c, t, p = x.shape
        x = x.astype(self.dtype)
        w = self.weight.astype(self.dtype)
        if self.kind == "matmul":
            y = self._taps_as_one_matmul(x, w)
        elif self.kind == "unfold":
            y = self._unfolded_taps(x, w)
        elif self.kind == "im2col":
            y = self._shifted_frames_on_channels(x, w)
        elif self.kind == "conv3d":
            y = self.conv3d(x.reshape(b, c, t, p, 1), w).reshape(b, self.out_channels, t, p)
        else:
            padded = self._pad_frames(x)  # (B, C, T + 2·half, P)
            y = self.conv2d(
                padded, w.reshape(self.out_channels, self.in_channels, self.kernel_size, 1)
            )
        return y.astype(ms.float32) + self.bias.reshape(1, -1, 1, 1)

    def _pad_frames(self, x: Tensor) -> Tensor:
        """k//2 zero frames before and after: (B, C, T, P) → (B, C, T + 2·(k//2), P)."""
        b, c, _, p = x.shape
        zeros = ops.zeros((b, c, self.kernel_size // 2, p), x.dtype)
        return ops.concat((zeros, x, zeros), 2)

    def _shifted_frames_on_channels(self, x: Tensor, w: Tensor) -> Tensor:
        """The k frames each output frame reads, concatenated on channels, then one 1×1
        convolution with the (O, k·C) weight."""
        t = x.shape[2]
        padded = self._pad_frames(x)
        cols = ops.concat([padded[:, :, i : i + t] for i in range(self.kernel_size)], 1)
        # (O, C, k, 1, 1) → (O, k, C) → (O, k·C, 1, 1), window order as in cols
        wk = w.reshape(self.out_channels, self.in_channels, self.kernel_size)
        wk = wk.transpose(0, 2, 1).reshape(self.out_channels, -1, 1, 1)
        return self.pointwise(cols, wk)

    def _unfolded_taps(self, x: Tensor, w: Tensor) -> Tensor:
        """(B, C, T, P) as an image of T rows and P columns: Im2Col with a (k, 1) window and
        (k//2, 0) padding gives the k frames each output frame reads, channel-major like the
        (O, C, k, 1, 1) weight, so one (O, C·k) × (C·k, T·P) GEMM per clip is the convolution."""
        b, c, t, p = x.shape
        k, o = self.kernel_size, self.out_channels
        if self.dtype == ms.bfloat16:  # Im2Col's padding refuses bfloat16 (see Conv2d._columns)
            cols = ops.unfold(x.astype(ms.float32), kernel_size=(k, 1), padding=(k // 2, 0))
            cols = cols.astype(self.dtype)
        else:
            cols = ops.unfold(x, kernel_size=(k, 1), padding=(k // 2, 0))
        y = ops.matmul(w.reshape(o, c * k), cols.reshape(b, c * k, t * p))  # (B, O, T·P)
        return y.reshape(b, o, t, p)

    def _taps_as_one_matmul(self, x: Tensor, w: Tensor) -> Tensor:
        """All k taps in one GEMM over every pixel of every frame, then each tap's result
        shifted in time: y[t] = Σ_i W_i · x[t + i − k//2], zero outside the chunk. MindSpore's
        CPU Conv3D / Conv2D for a (k,1,1) kernel ran at 0.4 GFLOP/s (AVX-512 EPYC, MindSpore
        2.10.0); this runs 7–40× faster on the same shapes."""
        b, c, t, p = x.shape
        k, o, half = self.kernel_size, self.out_channels, self.kernel_size // 2
        # (O, C, k, 1, 1) → (k, O, C) → (k·O, C): tap-major rows
        taps = w.reshape(o, c, k).transpose(2, 0, 1).reshape(k * o, c)
        y = ops.matmul(taps, x.reshape(b, c, t * p)).reshape(b, k, o, t, p)
        out = y[:, half]
        for i in range(k):
            shift = i - half  # tap i reads frame t + shift
            if shift == 0 or abs(shift) >= t:  # the centre tap, or a tap that sees only padding
                continue
            zeros = ops.zeros((b, o, abs(shift), p), y.dtype)
            if shift < 0:  # output frame t takes y_i[t + shift]: frames move later in time
                moved = ops.concat((zeros, y[:, i, :, : t + shift]), 2)
            else:
                moved = ops.concat((y[:, i, :, shift:], zeros), 2)
            out = out + moved
        return out


def pad_bottom_right(x: Tensor, kind: PadKind) -> Tensor:
    """Zero-pad one row at the bottom and one column at the right of (N, C, H, W) (the sgm VAE
    encoder's downsampling pad)."""
    if kind == "pad":
        return ops.pad(x, (0, 1, 0, 1))
    n, c, h, w = x.shape
    x = ops.concat((x, ops.zeros((n, c, h, 1), x.dtype)), 3)
    return ops.concat((x, ops.zeros((n, c, 1, w + 1), x.dtype)), 2)


def upsample_nearest2x(x: Tensor) -> Tensor:
    """Nearest-neighbour ×2 (torch F.interpolate(scale_factor=2, mode="nearest"))."""
    h, w = x.shape[-2:]
    return ops.ResizeNearestNeighbor((2 * h, 2 * w))(x)


def temporal_conv_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x (B, C, T, P), weight (O, C, k, 1, 1) → (B, O, T, P), zero padding k//2 in time."""
    k = weight.shape[2]
    half = k // 2
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (half, half), (0, 0)))
    t = x.shape[2]
    out = np.zeros((x.shape[0], weight.shape[0], t, x.shape[3]))
    for i in range(k):
        out += np.einsum("oc,bctp->botp", weight[:, :, i, 0, 0], xp[:, :, i : i + t])
    return out + bias.reshape(1, -1, 1, 1)
