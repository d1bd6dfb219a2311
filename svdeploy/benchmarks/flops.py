"""Analytic FLOP counts of the four SVD graphs from a ModelConfig and the graphs' static shapes.

Counted: 2 × multiply-adds of every convolution (spatial, temporal, 1×1), every linear layer and
both attention products (Q·Kᵀ and P·V). Not counted: norms, activations, softmax, residual sums,
resizes, concatenations (a few percent of the work at most). The structure follows
svdeploy.models (sgm's VideoUNet, Encoder, VideoDecoder, OpenCLIP ViT); the U-Net's blocks are
those of its block plan (svdeploy.models.plan).

Two counts differ in how the work is scheduled, not in the math:

- ``svdeploy``: what svdeploy's exported graphs compute. SVD's cross-attention context is a
  single token, so softmax over it is exactly 1 and attention(q, k, v) = v: the graphs compute
  to_out(to_v(context)) once per sample (spatial) or per video (temporal) and broadcast it,
  skipping to_q, to_k and both attention products. The time and conditioning embeddings run on
  all B·F rows (the graph repeats its inputs per frame first); the frame-position MLP runs on
  the F frame indices.
- ``diffusers``: what diffusers' UNetSpatioTemporalConditionModel computes: the full
  cross-attention (to_q over every token, to_k/to_v over the context repeated per sample, or per
  pixel in the temporal blocks, Q·Kᵀ and P·V with one key, to_out over every token), the
  time / conditioning embeddings on the B videos before repeating them per frame, and the
  frame-position MLP on all B·F (video, frame) pairs.

Reports use the ``diffusers`` count for every peer ("useful work of one U-Net call", the same
number for everyone), so achieved GFLOP/s compare like with like; the ``svdeploy`` count is
listed beside it. The VAE and the image encoder have no such difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Literal, Optional

from svdeploy.config import ModelConfig
from svdeploy.models.plan import CONV_IN, DOWNSAMPLE, RESNET, TRANSFORMER, UPSAMPLE, unet_plan

Mode = Literal["svdeploy", "diffusers"]
MODES = ("svdeploy", "diffusers")


@dataclass
class FlopCount:
    """FLOPs by op kind (conv, linear, attention) and a total."""

    by_kind: Dict[str, int] = field(
        default_factory=lambda: {"conv": 0, "linear": 0, "attention": 0}
    )

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def conv(
        self, n: int, out_h: int, out_w: int, c_in: int, c_out: int, kh: int, kw: int = 0
    ) -> None:
        """n images, output out_h × out_w, kernel kh × kw (kw defaults to kh)."""
        self.by_kind["conv"] += 2 * n * out_h * out_w * c_out * c_in * kh * (kw or kh)

    def linear(self, rows: int, d_in: int, d_out: int) -> None:
        self.by_kind["linear"] += 2 * rows * d_in * d_out

    def attention(self, sequences: int, q_len: int, kv_len: int, width: int) -> None:
        """Q·Kᵀ and P·V over all heads: width = heads × head dim."""
        self.by_kind["attention"] += 2 * (2 * sequences * q_len * kv_len * width)

    def add(self, other: "FlopCount") -> None:
        for kind, value in other.by_kind.items():
            self.by_kind[kind] += value

    def to_json(self) -> Dict[str, int]:
        return dict(self.by_kind, total=self.total)


# ---------------------------------------------------------------------------------------------
# U-Net pieces (also used by the tests' hand counts)
# ---------------------------------------------------------------------------------------------
def unet_resblock(n: int, h: int, w: int, c_in: int, c_out: int, emb: int) -> FlopCount:
    """Spatial ResBlock: conv3×3 c_in→c_out, emb linear, conv3×3 c_out→c_out, 1×1 skip if needed."""
    f = FlopCount()
    f.conv(n, h, w, c_in, c_out, 3)
    f.linear(n, emb, c_out)
    f.conv(n, h, w, c_out, c_out, 3)
    if c_in != c_out:
        f.conv(n, h, w, c_in, c_out, 1)
    return f


def temporal_resblock(n: int, h: int, w: int, c: int, emb: int, kernel: int) -> FlopCount:
    """Temporal ResBlock over n = B·T frames: two (k,1,1) convolutions (+ emb linear if emb)."""
    f = FlopCount()
    f.conv(n, h, w, c, c, kernel, 1)
    if emb:
        f.linear(n, emb, c)
    f.conv(n, h, w, c, c, kernel, 1)
    return f


def video_resblock(
    n: int, h: int, w: int, c_in: int, c_out: int, emb: int, kernel: int
) -> FlopCount:
    f = unet_resblock(n, h, w, c_in, c_out, emb)
    f.add(temporal_resblock(n, h, w, c_out, emb, kernel))
    return f


def feed_forward(rows: int, dim: int, dim_out: Optional[int] = None, mult: int = 4) -> FlopCount:
    """GEGLU: dim → 2·mult·dim, then mult·dim → dim_out."""
    f = FlopCount()
    f.linear(rows, dim, 2 * mult * dim)
    f.linear(rows, mult * dim, dim_out or dim)
    return f


def self_attention(sequences: int, length: int, dim: int) -> FlopCount:
    """q, k, v and out projections (dim → dim) and the two products."""
    f = FlopCount()
    f.linear(4 * sequences * length, dim, dim)
    f.attention(sequences, length, length, dim)
    return f


def cross_attention_one_token(
    mode: Mode, sequences: int, length: int, dim: int, context_dim: int, context_rows: int
) -> FlopCount:
    """Cross-attention of ``sequences`` × ``length`` queries to a one-token context.

    ``context_rows``: rows the context projections run on. svdeploy: to_v and to_out on those
    rows only (the result is broadcast). diffusers: to_q and to_out over all queries, to_k and
    to_v over the context rows, and both products with one key.
    """
    f = FlopCount()
    if mode == "svdeploy":
        f.linear(context_rows, context_dim, dim)  # to_v
        f.linear(context_rows, dim, dim)  # to_out
        return f
    f.linear(sequences * length, dim, dim)  # to_q
    f.linear(2 * context_rows, context_dim, dim)  # to_k, to_v
    f.attention(sequences, length, 1, dim)
    f.linear(sequences * length, dim, dim)  # to_out
    return f


def spatial_video_transformer(
    mode: Mode, b: int, frames: int, h: int, w: int, c: int, context_dim: int, depth: int
) -> FlopCount:
    """sgm SpatialVideoTransformer (inner width = c, as in SVD): proj_in, per depth a spatial
    block (self-attn, cross-attn, GEGLU FF) and a temporal block (FF in, self-attn over frames,
    cross-attn, FF), the frame-position MLP, proj_out."""
    n, p = b * frames, h * w
    f = FlopCount()
    f.linear(n * p, c, c)  # proj_in
    # frame-position MLP on the frame-index sinusoids: svdeploy once per frame index,
    # diffusers once per (video, frame)
    pos_rows = frames if mode == "svdeploy" else n
    f.linear(pos_rows, c, 4 * c)
    f.linear(pos_rows, 4 * c, c)
    for _ in range(depth):
        # spatial: sequences = frames of all videos, tokens = pixels; context per sample
        f.add(self_attention(n, p, c))
        f.add(cross_attention_one_token(mode, n, p, c, context_dim, context_rows=n))
        f.add(feed_forward(n * p, c))
        # temporal: sequences = pixels of all videos, tokens = frames. svdeploy projects the
        # first frame's context once per video; diffusers repeats it per pixel.
        f.add(feed_forward(n * p, c, c))  # ff_in
        f.add(self_attention(b * p, frames, c))
        f.add(
            cross_attention_one_token(
                mode, b * p, frames, c, context_dim, context_rows=b if mode == "svdeploy" else b * p
            )
        )
        f.add(feed_forward(n * p, c))
    f.linear(n * p, c, c)  # proj_out
    return f


def unet_flops(
    cfg: ModelConfig,
    frames: int,
    latent_h: int,
    latent_w: int,
    guidance_batch: int,
    mode: Mode = "diffusers",
) -> FlopCount:
    """One U-Net graph call: B = guidance_batch videos of ``frames`` frames at latent h × w."""
    u = cfg.unet
    b, n = guidance_batch, guidance_batch * frames
    mc, emb = u.model_channels, u.time_embed_dim
    k = u.video_kernel_size
    f = FlopCount()
    # time embedding and conditioning embedding (svdeploy: per frame; diffusers: per video)
    rows = n if mode == "svdeploy" else b
    f.linear(rows, mc, emb)
    f.linear(rows, emb, emb)
    f.linear(rows, u.adm_in_channels, emb)
    f.linear(rows, emb, emb)

    h, w = latent_h, latent_w
    for layer in unet_plan(u).layers():
        cin, cout = layer.channels_in, layer.channels_out
        if layer.kind == RESNET:
            f.add(video_resblock(n, h, w, cin, cout, emb, k))
        elif layer.kind == TRANSFORMER:
            f.add(
                spatial_video_transformer(
                    mode, b, frames, h, w, cout, u.context_dim, u.transformer_depth
                )
            )
        elif layer.kind == DOWNSAMPLE:
            h, w = (h + 1) // 2, (w + 1) // 2  # 3×3, stride 2, padding 1
            f.conv(n, h, w, cin, cout, 3)
        elif layer.kind == UPSAMPLE:
            h, w = 2 * h, 2 * w
            f.conv(n, h, w, cin, cout, 3)  # nearest ×2, then conv3×3
        elif layer.kind == CONV_IN:
            f.conv(n, h, w, cin, cout, 3)
        else:
            raise ValueError(f"unknown U-Net layer kind {layer.kind!r}")
    f.conv(n, h, w, mc, u.out_channels, 3)  # out.2
    return f


# ---------------------------------------------------------------------------------------------
# VAE and image encoder
# ---------------------------------------------------------------------------------------------
def vae_resnet(n: int, h: int, w: int, c_in: int, c_out: int) -> FlopCount:
    f = FlopCount()
    f.conv(n, h, w, c_in, c_out, 3)
    f.conv(n, h, w, c_out, c_out, 3)
    if c_in != c_out:
        f.conv(n, h, w, c_in, c_out, 1)
    return f


def vae_attention(n: int, h: int, w: int, c: int) -> FlopCount:
    """Single-head self-attention with 1×1-conv q, k, v, proj_out."""
    f = FlopCount()
    for _ in range(4):
        f.conv(n, h, w, c, c, 1)
    f.attention(n, h * w, h * w, c)
    return f


def vae_encoder_flops(cfg: ModelConfig, height: int, width: int) -> FlopCount:
    """Encoder + quant_conv on one image (the conditioning frame)."""
    v = cfg.vae
    f = FlopCount()
    h, w = height, width
    f.conv(1, h, w, v.in_channels, v.ch, 3)
    in_mult = (1,) + tuple(v.ch_mult)
    block_in = v.ch
    for level, mult in enumerate(v.ch_mult):
        block_in = v.ch * in_mult[level]
        block_out = v.ch * mult
        for _ in range(v.num_res_blocks):
            f.add(vae_resnet(1, h, w, block_in, block_out))
            block_in = block_out
        if level != len(v.ch_mult) - 1:
            h, w = h // 2, w // 2  # pad bottom/right by 1, 3×3 stride 2
            f.conv(1, h, w, block_in, block_in, 3)
    f.add(vae_resnet(1, h, w, block_in, block_in))
    f.add(vae_attention(1, h, w, block_in))
    f.add(vae_resnet(1, h, w, block_in, block_in))
    f.conv(1, h, w, block_in, 2 * v.z_channels, 3)
    f.conv(1, h, w, 2 * v.z_channels, 2 * v.embed_dim, 1)
    return f


def vae_decoder_flops(cfg: ModelConfig, chunk: int, latent_h: int, latent_w: int) -> FlopCount:
    """Temporal decoder on one chunk of ``chunk`` frames."""
    v = cfg.vae
    k = v.video_kernel_size
    f = FlopCount()
    h, w = latent_h, latent_w
    block_in = v.ch * v.ch_mult[-1]

    def video_resnet(c_in: int, c_out: int) -> None:
        f.add(vae_resnet(chunk, h, w, c_in, c_out))
        f.add(temporal_resblock(chunk, h, w, c_out, 0, k))

    f.conv(chunk, h, w, v.z_channels, block_in, 3)
    video_resnet(block_in, block_in)
    f.add(vae_attention(chunk, h, w, block_in))
    video_resnet(block_in, block_in)
    for level in reversed(range(len(v.ch_mult))):
        block_out = v.ch * v.ch_mult[level]
        for _ in range(v.num_res_blocks + 1):
            video_resnet(block_in, block_out)
            block_in = block_out
        if level:
            h, w = 2 * h, 2 * w
            f.conv(chunk, h, w, block_in, block_in, 3)
    f.conv(chunk, h, w, block_in, v.out_ch, 3)
    f.conv(chunk, h, w, v.out_ch, v.out_ch, k, 1)  # time_mix_conv
    return f


def image_encoder_flops(cfg: ModelConfig) -> FlopCount:
    c = cfg.image_encoder
    grid = c.image_size // c.patch_size
    length = grid * grid + 1
    f = FlopCount()
    f.conv(1, grid, grid, 3, c.width, c.patch_size)
    for _ in range(c.layers):
        f.linear(length, c.width, 3 * c.width)  # packed in_proj
        f.attention(1, length, length, c.width)
        f.linear(length, c.width, c.width)  # out_proj
        f.linear(length, c.width, c.mlp_width)
        f.linear(length, c.mlp_width, c.width)
    f.linear(1, c.width, c.embed_dim)  # projection of the CLS token
    return f


# ---------------------------------------------------------------------------------------------
# Per graph
# ---------------------------------------------------------------------------------------------
def graph_flops(
    cfg: ModelConfig,
    graph: str,
    *,
    frames: int,
    height: int,
    width: int,
    guidance_batch: int = 2,
    decode_chunk_size: Optional[int] = None,
    mode: Mode = "diffusers",
) -> FlopCount:
    """FLOPs of one call of ``graph`` (artifact graph names) at these static shapes."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    factor = cfg.vae.downsample_factor
    lh, lw = height // factor, width // factor
    chunk = decode_chunk_size or frames
    if graph == "unet":
        return unet_flops(cfg, frames, lh, lw, guidance_batch, mode)
    if graph == "vae_decoder":
        return vae_decoder_flops(cfg, chunk, lh, lw)
    if graph == "vae_decoder_tail":
        return vae_decoder_flops(cfg, frames % chunk, lh, lw)
    if graph == "vae_encoder":
        return vae_encoder_flops(cfg, height, width)
    if graph == "image_encoder":
        return image_encoder_flops(cfg)
    raise ValueError(
        f"graph {graph!r}: expected image_encoder, vae_encoder, unet, vae_decoder or "
        "vae_decoder_tail"
    )


__all__ = [
    "FlopCount",
    "MODES",
    "graph_flops",
    "unet_flops",
    "vae_encoder_flops",
    "vae_decoder_flops",
    "image_encoder_flops",
    "unet_resblock",
    "video_resblock",
    "temporal_resblock",
    "spatial_video_transformer",
    "cross_attention_one_token",
    "self_attention",
    "feed_forward",
    "vae_resnet",
    "vae_attention",
]
