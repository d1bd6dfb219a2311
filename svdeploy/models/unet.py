"""The spatio-temporal U-Net of SVD (sgm ``VideoUNet``), with Stability's parameter names.

Tensors of a video batch are frame-major inside each video: index n = b·T + t, as in sgm.
Shapes in comments: N = B·T samples, C channels, H×W pixels, P = H·W, E time-embedding width.
"""

from __future__ import annotations

from typing import Optional

import mindspore as ms
from mindspore import Tensor, nn, ops

from svdeploy.config import GROUPS, UNetConfig
from svdeploy.kernels.config import KernelConfig
from svdeploy.kernels.linear import Conv2d, Linear, TemporalConv, upsample_nearest2x
from svdeploy.kernels.norm import GroupNorm

from .layers import BasicTransformerBlock, MixFactor, VideoTransformerBlock, timestep_embedding
from .plan import CONV_IN, DOWNSAMPLE, RESNET, TRANSFORMER, UPSAMPLE, Block, Layer, unet_plan


def _silu(x: Tensor) -> Tensor:
    return x * ops.sigmoid(x)


class ResBlock(nn.Cell):
    """sgm ResBlock (dims=2): GN → SiLU → conv3×3 → +emb → GN → SiLU → conv3×3, plus skip."""

    def __init__(
        self, channels: int, emb_channels: int, out_channels: int, eps: float, kernels: KernelConfig
    ) -> None:
        super().__init__()
        cd = kernels.compute_dtype
        self.in_layers = nn.CellList(
            [
                GroupNorm(GROUPS, channels, eps, kernels.group_norm),
                nn.SiLU(),
                Conv2d(channels, out_channels, 3, padding=1, compute_dtype=cd, kind=kernels.conv),
            ]
        )
        self.emb_layers = nn.CellList(
            [nn.SiLU(), Linear(emb_channels, out_channels, compute_dtype=cd)]
        )
        self.out_layers = nn.CellList(
            [
                GroupNorm(GROUPS, out_channels, eps, kernels.group_norm),
                nn.SiLU(),
                nn.Dropout(p=0.0),
                Conv2d(
                    out_channels, out_channels, 3, padding=1, compute_dtype=cd, kind=kernels.conv
                ),
            ]
        )
        self.has_skip = channels != out_channels
        self.skip_connection = (
            Conv2d(channels, out_channels, 1, compute_dtype=cd) if self.has_skip else None
        )

    def construct(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.forward_spatial(x, emb)

    def forward_spatial(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers[2](_silu(self.in_layers[0](x)))
        h = h + self.emb_layers[1](_silu(emb)).reshape(h.shape[0], -1, 1, 1)
        h = self.out_layers[3](_silu(self.out_layers[0](h)))
        skip = self.skip_connection(x) if self.has_skip else x
        return skip + h


class TemporalResBlock(nn.Cell):
    """sgm ResBlock with dims=3, kernel (k,1,1), exchange_temb_dims=True, on (B, C, T, P).

    With ``emb_channels`` 0 it has no emb_layers (the VAE decoder's skip_t_emb=True).
    """

    def __init__(
        self, channels: int, emb_channels: int, eps: float, kernel_size: int, kernels: KernelConfig
    ) -> None:
        super().__init__()
        cd = kernels.compute_dtype
        kind = kernels.temporal_conv
        self.in_layers = nn.CellList(
            [
                GroupNorm(GROUPS, channels, eps, kernels.group_norm),
                nn.SiLU(),
                TemporalConv(channels, channels, kernel_size, kind, cd),
            ]
        )
        self.has_emb = emb_channels > 0
        self.emb_layers = (
            nn.CellList([nn.SiLU(), Linear(emb_channels, channels, compute_dtype=cd)])
            if self.has_emb
            else None
        )
        self.out_layers = nn.CellList(
            [
                GroupNorm(GROUPS, channels, eps, kernels.group_norm),
                nn.SiLU(),
                nn.Dropout(p=0.0),
                TemporalConv(channels, channels, kernel_size, kind, cd),
            ]
        )

    def construct(self, x: Tensor, emb: Optional[Tensor]) -> Tensor:
        """x: (B, C, T, P); emb: (B·T, E) or None."""
        b, c, t, _ = x.shape
        h = self.in_layers[2](_silu(self.in_layers[0](x)))
        if self.has_emb:
            e = self.emb_layers[1](_silu(emb))  # (B·T, C)
            h = h + e.reshape(b, t, c).transpose(0, 2, 1).reshape(b, c, t, 1)
        h = self.out_layers[3](_silu(self.out_layers[0](h)))
        return x + h


def frames_to_time_major(x: Tensor, num_frames: int) -> Tensor:
    """(B·T, C, H, W) → (B, C, T, H·W)."""
    n, c, h, w = x.shape
    return x.reshape(n // num_frames, num_frames, c, h * w).transpose(0, 2, 1, 3)


def time_major_to_frames(x: Tensor, height: int, width: int) -> Tensor:
    """(B, C, T, H·W) → (B·T, C, H, W)."""
    b, c, t, _ = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b * t, c, height, width)


class VideoResBlock(ResBlock):
    """Spatial ResBlock (its own parameters, as sgm subclasses it), then a temporal ResBlock
    over frames, mixed with a learned alpha: out = α·spatial + (1−α)·temporal."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int,
        cfg: UNetConfig,
        kernels: KernelConfig,
    ) -> None:
        super().__init__(channels, emb_channels, out_channels, cfg.resblock_eps, kernels)
        self.time_stack = TemporalResBlock(
            out_channels, emb_channels, cfg.resblock_eps, cfg.video_kernel_size, kernels
        )
        self.time_mixer = MixFactor()

    def construct(self, x: Tensor, emb: Tensor, context: Tensor, num_frames: int) -> Tensor:
        x = self.forward_spatial(x, emb)
        _, _, h, w = x.shape
        video = frames_to_time_major(x, num_frames)  # (B, C, T, P)
        mixed = self.time_mixer(video, self.time_stack(video, emb))
        return time_major_to_frames(mixed, h, w)


class SpatialVideoTransformer(nn.Cell):
    """sgm SpatialVideoTransformer: GN → linear proj_in → per depth (spatial block; temporal
    block on x + frame-position embedding; learned mix) → proj_out → + input."""

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        depth: int,
        context_dim: int,
        kernels: KernelConfig,
        max_time_embed_period: int,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        cd = kernels.compute_dtype
        self.channels = channels
        self.max_period = float(max_time_embed_period)
        self.norm = GroupNorm(GROUPS, channels, 1e-6, kernels.group_norm)
        self.proj_in = Linear(channels, inner, compute_dtype=cd)
        self.transformer_blocks = nn.CellList(
            [
                BasicTransformerBlock(inner, heads, dim_head, context_dim, kernels)
                for _ in range(depth)
            ]
        )
        self.time_stack = nn.CellList(
            [
                VideoTransformerBlock(inner, heads, dim_head, context_dim, kernels)
                for _ in range(depth)
            ]
        )
        self.time_pos_embed = nn.CellList(
            [
                Linear(channels, 4 * channels, compute_dtype=cd),
                nn.SiLU(),
                Linear(4 * channels, channels, compute_dtype=cd),
            ]
        )
        self.time_mixer = MixFactor()
        self.proj_out = Linear(inner, channels, compute_dtype=cd)

    def construct(self, x: Tensor, emb: Tensor, context: Tensor, num_frames: int) -> Tensor:
        n, c, h, w = x.shape
        b = n // num_frames
        p = h * w
        x_in = x
        x = self.norm(x).reshape(n, c, p).transpose(0, 2, 1)  # (N, P, C)
        x = self.proj_in(x)
        inner = x.shape[2]
        time_context = context.reshape(b, num_frames, context.shape[1], context.shape[2])[:, 0]
        frame_index = ops.arange(0, num_frames, dtype=ms.float32)
        pos = timestep_embedding(frame_index, c, self.max_period)
        pos = self.time_pos_embed[2](_silu(self.time_pos_embed[0](pos)))  # (T, C)
        pos = pos.reshape(1, num_frames, 1, inner)
        for block, mix_block in zip(self.transformer_blocks, self.time_stack):
            x = block(x, context)
            # temporal tokens: (B·T, P, C) → (B, P, T, C) → (B·P, T, C)
            tokens = x.reshape(b, num_frames, p, inner) + pos
            tokens = tokens.transpose(0, 2, 1, 3).reshape(b * p, num_frames, inner)
            tokens = mix_block(tokens, time_context, b)
            x_temporal = tokens.reshape(b, p, num_frames, inner).transpose(0, 2, 1, 3)
            x = self.time_mixer(x, x_temporal.reshape(n, p, inner))
        x = self.proj_out(x)
        x = x.transpose(0, 2, 1).reshape(n, c, h, w)
        return x + x_in


class Downsample(nn.Cell):
    def __init__(self, channels: int, kernels: KernelConfig) -> None:
        super().__init__()
        self.op = Conv2d(
            channels,
            channels,
            3,
            stride=2,
            padding=1,
            compute_dtype=kernels.compute_dtype,
            kind=kernels.conv,
        )

    def construct(self, x: Tensor, emb: Tensor, context: Tensor, num_frames: int) -> Tensor:
        return self.op(x)


class Upsample(nn.Cell):
    def __init__(self, channels: int, kernels: KernelConfig) -> None:
        super().__init__()
        self.conv = Conv2d(
            channels, channels, 3, padding=1, compute_dtype=kernels.compute_dtype, kind=kernels.conv
        )

    def construct(self, x: Tensor, emb: Tensor, context: Tensor, num_frames: int) -> Tensor:
        return self.conv(upsample_nearest2x(x))


class InputConv(Conv2d):
    """input_blocks.0.0: the first convolution, callable like the other blocks."""

    def construct(self, x: Tensor, emb: Tensor, context: Tensor, num_frames: int) -> Tensor:
        return self.forward_conv(x)


class EmbedSequential(nn.SequentialCell):
    """sgm TimestepEmbedSequential: every layer takes (x, emb, context, num_frames)."""

    def construct(self, x: Tensor, emb: Tensor, context: Tensor, num_frames: int) -> Tensor:
        for layer in self.cell_list:
            x = layer(x, emb, context, num_frames)
        return x


def _layer_cell(layer: Layer, cfg: UNetConfig, kernels: KernelConfig) -> nn.Cell:
    """The cell of one planned layer."""
    cin, cout = layer.channels_in, layer.channels_out
    if layer.kind == RESNET:
        return VideoResBlock(cin, cfg.time_embed_dim, cout, cfg, kernels)
    if layer.kind == TRANSFORMER:
        heads = cout // cfg.num_head_channels
        return SpatialVideoTransformer(
            cout,
            heads,
            cfg.num_head_channels,
            cfg.transformer_depth,
            cfg.context_dim,
            kernels,
            cfg.max_time_embed_period,
        )
    if layer.kind == DOWNSAMPLE:
        return Downsample(cout, kernels)
    if layer.kind == UPSAMPLE:
        return Upsample(cout, kernels)
    if layer.kind == CONV_IN:
        return InputConv(
            cin, cout, 3, padding=1, compute_dtype=kernels.compute_dtype, kind=kernels.conv
        )
    raise ValueError(f"unknown U-Net layer kind {layer.kind!r}")


def _block_cell(block: Block, cfg: UNetConfig, kernels: KernelConfig) -> EmbedSequential:
    return EmbedSequential([_layer_cell(layer, cfg, kernels) for layer in block.layers])


class VideoUNet(nn.Cell):
    """sgm VideoUNet for SVD.

    construct(x (N, in, H, W), timesteps (N,) = c_noise, context (N, L, D), y (N, adm_in),
    num_frames T) → (N, out, H, W), with N = B·T, frame-major within each video.
    """

    def __init__(self, cfg: UNetConfig, kernels: KernelConfig = KernelConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        cd = kernels.compute_dtype
        mc = cfg.model_channels
        emb_dim = cfg.time_embed_dim
        self.model_channels = mc
        self.time_embed = nn.CellList(
            [
                Linear(mc, emb_dim, compute_dtype=cd),
                nn.SiLU(),
                Linear(emb_dim, emb_dim, compute_dtype=cd),
            ]
        )
        self.label_emb = nn.CellList(
            [
                nn.CellList(
                    [
                        Linear(cfg.adm_in_channels, emb_dim, compute_dtype=cd),
                        nn.SiLU(),
                        Linear(emb_dim, emb_dim, compute_dtype=cd),
                    ]
                )
            ]
        )

        # The blocks as the plan lays them out; a cell's place in its EmbedSequential gives
        # it Stability's name (input_blocks.1.0, ...).
        plan = unet_plan(cfg)
        self.input_blocks = nn.CellList([_block_cell(b, cfg, kernels) for b in plan.input_blocks])
        self.middle_block = _block_cell(plan.middle_block, cfg, kernels)
        self.output_blocks = nn.CellList([_block_cell(b, cfg, kernels) for b in plan.output_blocks])

        # sgm builds the output conv from model_channels (== the last block's width
        # whenever channel_mult[0] == 1)
        self.out = nn.CellList(
            [
                GroupNorm(GROUPS, plan.channels_out, cfg.resblock_eps, kernels.group_norm),
                nn.SiLU(),
                Conv2d(mc, cfg.out_channels, 3, padding=1, compute_dtype=cd, kind=kernels.conv),
            ]
        )

    def construct(
        self, x: Tensor, timesteps: Tensor, context: Tensor, y: Tensor, num_frames: int
    ) -> Tensor:
        t_emb = timestep_embedding(timesteps, self.model_channels)
        emb = self.time_embed[2](_silu(self.time_embed[0](t_emb)))
        label = self.label_emb[0]
        emb = emb + label[2](_silu(label[0](y)))  # (N, E)
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb, context, num_frames)
            skips.append(h)
        h = self.middle_block(h, emb, context, num_frames)
        for i, block in enumerate(self.output_blocks):
            h = ops.concat((h, skips[len(skips) - 1 - i]), 1)  # skips are used last-in first-out
            h = block(h, emb, context, num_frames)
        return self.out[2](_silu(self.out[0](h)))
