"""SVD's autoencoder: the image VAE encoder (sgm ``Encoder`` + ``quant_conv``) that the model
is conditioned with, and the temporal decoder (sgm ``VideoDecoder``, time_mode "conv-only").

GroupNorms of the sgm autoencoder use eps 1e-6; the decoder's temporal res blocks are
openaimodel ResBlocks and use 1e-5. Shapes: N = frames of one chunk, C channels, H×W pixels.
"""

from __future__ import annotations

from typing import List

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from svdeploy.config import GROUPS, VAEConfig
from svdeploy.kernels.attention import Attention
from svdeploy.kernels.config import KernelConfig
from svdeploy.kernels.linear import Conv2d, TemporalConv, pad_bottom_right, upsample_nearest2x
from svdeploy.kernels.norm import GroupNorm

from .unet import TemporalResBlock, frames_to_time_major, time_major_to_frames

AE_EPS = 1e-6


def _conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    *,
    kernels: KernelConfig,
) -> Conv2d:
    return Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        compute_dtype=kernels.compute_dtype,
        kind=kernels.conv,
    )


def _silu(x: Tensor) -> Tensor:
    return x * ops.sigmoid(x)


class ResnetBlock(nn.Cell):
    """sgm ResnetBlock without time embedding: GN → SiLU → conv → GN → SiLU → conv, + skip."""

    def __init__(self, in_channels: int, out_channels: int, kernels: KernelConfig) -> None:
        super().__init__()
        self.norm1 = GroupNorm(GROUPS, in_channels, AE_EPS, kernels.group_norm)
        self.conv1 = _conv(in_channels, out_channels, 3, padding=1, kernels=kernels)
        self.norm2 = GroupNorm(GROUPS, out_channels, AE_EPS, kernels.group_norm)
        self.conv2 = _conv(out_channels, out_channels, 3, padding=1, kernels=kernels)
        self.has_shortcut = in_channels != out_channels
        self.nin_shortcut = (
            _conv(in_channels, out_channels, 1, kernels=kernels) if self.has_shortcut else None
        )

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_spatial(x)

    def forward_spatial(self, x: Tensor) -> Tensor:
        h = self.conv1(_silu(self.norm1(x)))
        h = self.conv2(_silu(self.norm2(h)))
        skip = self.nin_shortcut(x) if self.has_shortcut else x
        return skip + h


class VideoResnetBlock(ResnetBlock):
    """Decoder block: spatial ResnetBlock, then a temporal ResBlock over the chunk's frames,
    mixed the other way round from the U-Net: out = α·temporal + (1−α)·spatial."""

    def __init__(
        self, in_channels: int, out_channels: int, cfg: VAEConfig, kernels: KernelConfig
    ) -> None:
        super().__init__(in_channels, out_channels, kernels)
        self.time_stack = TemporalResBlock(out_channels, 0, 1e-5, cfg.video_kernel_size, kernels)
        self.mix_factor = Parameter(ops.zeros((1,), ms.float32), name="mix_factor")

    def construct(self, x: Tensor, num_frames: int) -> Tensor:
        x = self.forward_spatial(x)
        _, _, h, w = x.shape
        video = frames_to_time_major(x, num_frames)  # (B, C, T, P)
        alpha = ops.sigmoid(self.mix_factor)
        mixed = alpha * self.time_stack(video, None) + (1.0 - alpha) * video
        return time_major_to_frames(mixed, h, w)


def _tokens(x: Tensor) -> Tensor:
    """(N, C, H, W) → (N, H·W, C)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h * w).transpose(0, 2, 1)


class AttnBlock(nn.Cell):
    """Single-head spatial self-attention with 1×1-conv projections (sgm AttnBlock)."""

    def __init__(self, channels: int, kernels: KernelConfig) -> None:
        super().__init__()
        self.norm = GroupNorm(GROUPS, channels, AE_EPS, kernels.group_norm)
        self.q = _conv(channels, channels, 1, kernels=kernels)
        self.k = _conv(channels, channels, 1, kernels=kernels)
        self.v = _conv(channels, channels, 1, kernels=kernels)
        self.proj_out = _conv(channels, channels, 1, kernels=kernels)
        self.attend = Attention(1, channels, kernels.attention, self.q.dtype)

    def construct(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        hn = self.norm(x)
        out = self.attend(_tokens(self.q(hn)), _tokens(self.k(hn)), _tokens(self.v(hn)))
        out = out.transpose(0, 2, 1).reshape(n, c, h, w)
        return x + self.proj_out(out)


class DownStage(nn.Cell):
    """One encoder level: ``block`` res blocks and an optional ``downsample``."""

    def __init__(self, blocks: List[nn.Cell], downsample: "Downsample | None") -> None:
        super().__init__()
        self.block = nn.CellList(blocks)
        self.has_downsample = downsample is not None
        self.downsample = downsample

    def construct(self, x: Tensor) -> Tensor:
        for blk in self.block:
            x = blk(x)
        if self.has_downsample:
            x = self.downsample(x)
        return x


class Downsample(nn.Cell):
    """Pad one row/column at bottom/right, then a stride-2 3×3 convolution (sgm)."""

    def __init__(self, channels: int, kernels: KernelConfig) -> None:
        super().__init__()
        self.conv = _conv(channels, channels, 3, stride=2, kernels=kernels)
        self.pad_kind = kernels.pad

    def construct(self, x: Tensor) -> Tensor:
        return self.conv(pad_bottom_right(x, self.pad_kind))


class Upsample(nn.Cell):
    def __init__(self, channels: int, kernels: KernelConfig) -> None:
        super().__init__()
        self.conv = _conv(channels, channels, 3, padding=1, kernels=kernels)

    def construct(self, x: Tensor) -> Tensor:
        return self.conv(upsample_nearest2x(x))


class MidBlock(nn.Cell):
    """Encoder middle: block_1 → attn_1 → block_2."""

    def __init__(self, channels: int, kernels: KernelConfig) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, kernels)
        self.attn_1 = AttnBlock(channels, kernels)
        self.block_2 = ResnetBlock(channels, channels, kernels)

    def construct(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Cell):
    """sgm Encoder (double_z): (N, 3, H, W) → (N, 2·z_channels, H/f, W/f) moments."""

    def __init__(self, cfg: VAEConfig, kernels: KernelConfig) -> None:
        super().__init__()
        self.conv_in = _conv(cfg.in_channels, cfg.ch, 3, padding=1, kernels=kernels)
        in_mult = (1,) + tuple(cfg.ch_mult)
        stages = []
        block_in = cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            block_in = cfg.ch * in_mult[level]
            block_out = cfg.ch * mult
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, kernels))
                block_in = block_out
            last = level == len(cfg.ch_mult) - 1
            stages.append(DownStage(blocks, None if last else Downsample(block_in, kernels)))
        self.down = nn.CellList(stages)
        self.mid = MidBlock(block_in, kernels)
        self.norm_out = GroupNorm(GROUPS, block_in, AE_EPS, kernels.group_norm)
        self.conv_out = _conv(block_in, 2 * cfg.z_channels, 3, padding=1, kernels=kernels)

    def construct(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = stage(h)
        h = self.mid(h)
        return self.conv_out(_silu(self.norm_out(h)))


class VAEEncoder(nn.Cell):
    """The conditioning-frame encoder: image in [−1, 1] → posterior mean (N, embed_dim, h, w).

    Parameter names ``encoder.*`` and ``quant_conv.*`` as under
    ``conditioner.embedders.3.encoder.`` in Stability's checkpoint.
    """

    def __init__(self, cfg: VAEConfig, kernels: KernelConfig = KernelConfig()) -> None:
        super().__init__()
        self.embed_dim = cfg.embed_dim
        self.encoder = Encoder(cfg, kernels)
        self.quant_conv = _conv(2 * cfg.z_channels, 2 * cfg.embed_dim, 1, kernels=kernels)

    def construct(self, x: Tensor) -> Tensor:
        moments = self.quant_conv(self.encoder(x))
        return moments[:, : self.embed_dim]  # mean; the log-variance half is unused (mode)


class AE3DConv(Conv2d):
    """conv_out: a 3×3 Conv2d (this cell's own weight) followed by ``time_mix_conv``, a
    (k,1,1) convolution over the frames of the chunk."""

    def __init__(
        self, in_channels: int, out_channels: int, video_kernel_size: int, kernels: KernelConfig
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            3,
            padding=1,
            compute_dtype=kernels.compute_dtype,
            kind=kernels.conv,
        )
        self.time_mix_conv = TemporalConv(
            out_channels,
            out_channels,
            video_kernel_size,
            kernels.temporal_conv,
            kernels.compute_dtype,
        )

    def construct(self, x: Tensor, num_frames: int) -> Tensor:
        x = self.forward_conv(x)
        _, _, h, w = x.shape
        return time_major_to_frames(self.time_mix_conv(frames_to_time_major(x, num_frames)), h, w)


class VideoMidBlock(nn.Cell):
    def __init__(self, channels: int, cfg: VAEConfig, kernels: KernelConfig) -> None:
        super().__init__()
        self.block_1 = VideoResnetBlock(channels, channels, cfg, kernels)
        self.attn_1 = AttnBlock(channels, kernels)
        self.block_2 = VideoResnetBlock(channels, channels, cfg, kernels)

    def construct(self, x: Tensor, num_frames: int) -> Tensor:
        x = self.block_1(x, num_frames)
        return self.block_2(self.attn_1(x), num_frames)


class UpStage(nn.Cell):
    """One decoder level: num_res_blocks + 1 video res blocks and an optional ``upsample``."""

    def __init__(self, blocks: List[nn.Cell], upsample: "Upsample | None") -> None:
        super().__init__()
        self.block = nn.CellList(blocks)
        self.has_upsample = upsample is not None
        self.upsample = upsample

    def construct(self, x: Tensor, num_frames: int) -> Tensor:
        for blk in self.block:
            x = blk(x, num_frames)
        if self.has_upsample:
            x = self.upsample(x)
        return x


class VideoDecoder(nn.Cell):
    """sgm VideoDecoder: z (N, z_channels, h, w) of one chunk of N frames → (N, 3, H, W).

    Frames are mixed only inside the chunk, so the chunk size changes the result slightly.
    ``up`` is stored by level index (up.0 is the full-resolution level) and run deepest first.
    """

    def __init__(self, cfg: VAEConfig, kernels: KernelConfig = KernelConfig()) -> None:
        super().__init__()
        block_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = _conv(cfg.z_channels, block_in, 3, padding=1, kernels=kernels)
        self.mid = VideoMidBlock(block_in, cfg, kernels)
        stages: List[nn.Cell] = [None] * len(cfg.ch_mult)  # type: ignore[list-item]
        for level in reversed(range(len(cfg.ch_mult))):
            block_out = cfg.ch * cfg.ch_mult[level]
            blocks = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(VideoResnetBlock(block_in, block_out, cfg, kernels))
                block_in = block_out
            stages[level] = UpStage(blocks, Upsample(block_in, kernels) if level else None)
        self.up = nn.CellList(stages)
        self.num_levels = len(cfg.ch_mult)
        self.norm_out = GroupNorm(GROUPS, block_in, AE_EPS, kernels.group_norm)
        self.conv_out = AE3DConv(block_in, cfg.out_ch, cfg.video_kernel_size, kernels)

    def construct(self, z: Tensor, num_frames: int) -> Tensor:
        h = self.mid(self.conv_in(z), num_frames)
        for level in range(self.num_levels - 1, -1, -1):
            h = self.up[level](h, num_frames)
        return self.conv_out(_silu(self.norm_out(h)), num_frames)
