"""Every parameter of the four SVD networks under Stability's (sgm) full names, with its shape.

The table is computed from a :class:`~svdeploy.config.ModelConfig` in pure Python (no MindSpore,
no allocation), so a 9 GB checkpoint can be checked strictly against it before any tensor is
read, and without building a network. It follows the module structure of Stability's code
(generative-models ``sgm/``) exactly:

- U-Net: ``sgm.modules.diffusionmodules.video_model.VideoUNet`` (its blocks as the block plan,
  :mod:`svdeploy.models.plan`, lays them out) with ``VideoResBlock`` (spatial
  ``ResBlock`` + temporal ``ResBlock`` over a (k,1,1) Conv3d + ``AlphaBlender``) and
  ``sgm.modules.video_attention.SpatialVideoTransformer`` (linear proj_in/out, GEGLU, one temporal
  ``VideoTransformerBlock`` per spatial block, ff_in, spatial context for the temporal attn2);
- VAE encoder: ``sgm.modules.diffusionmodules.model.Encoder`` (double_z, no attention outside
  the mid block) + the ``quant_conv`` of ``AutoencodingEngineLegacy``;
- VAE decoder: ``sgm.modules.autoencoding.temporal_ae.VideoDecoder`` with time_mode "conv-only"
  (temporal res blocks, plain mid attention, ``AE3DConv`` output conv);
- image encoder: OpenCLIP ``VisionTransformer`` (no layer scale, no attention pooling).
"""

from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

from svdeploy.config import ModelConfig, UNetConfig
from svdeploy.contract import NETWORK_NAMES

from .plan import CONV_IN, DOWNSAMPLE, RESNET, TRANSFORMER, UPSAMPLE, Layer, unet_plan

Shape = Tuple[int, ...]

# the four networks, in the contract's one order (svdeploy.contract); the old name stays
NETWORKS: Tuple[str, ...] = NETWORK_NAMES

NETWORK_PREFIXES: Dict[str, str] = {
    "unet": "model.diffusion_model.",
    "vae_decoder": "first_stage_model.decoder.",
    "vae_encoder": "conditioner.embedders.3.encoder.",
    "image_encoder": "conditioner.embedders.0.open_clip.model.visual.",
}

# The cond-frame autoencoder under conditioner.embedders.3.encoder also holds a decoder and a
# post_quant_conv that SVD never runs; only these children belong to the network.
VAE_ENCODER_CHILDREN: Tuple[str, ...] = ("encoder.", "quant_conv.")


def network_of(name: str) -> Optional[str]:
    """The network a full Stability tensor name belongs to, or None (text tower, EMA, ...)."""
    for network, prefix in NETWORK_PREFIXES.items():
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            if network == "vae_encoder" and not rest.startswith(VAE_ENCODER_CHILDREN):
                return None
            return network
    return None


def numel(shape: Shape) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


# ---------------------------------------------------------------------------------------------
# Building blocks. Each yields (name relative to the network, shape).
# ---------------------------------------------------------------------------------------------
Entries = Iterator[Tuple[str, Shape]]


def _affine(prefix: str, channels: int) -> Entries:
    """A norm layer (GroupNorm / LayerNorm): weight and bias of one size."""
    yield f"{prefix}.weight", (channels,)
    yield f"{prefix}.bias", (channels,)


def _linear(prefix: str, out_features: int, in_features: int, bias: bool = True) -> Entries:
    yield f"{prefix}.weight", (out_features, in_features)
    if bias:
        yield f"{prefix}.bias", (out_features,)


def _conv(
    prefix: str, out_ch: int, in_ch: int, kernel: Tuple[int, ...], bias: bool = True
) -> Entries:
    yield f"{prefix}.weight", (out_ch, in_ch) + tuple(kernel)
    if bias:
        yield f"{prefix}.bias", (out_ch,)


def _unet_resblock(prefix: str, ch_in: int, ch_out: int, emb: int, video_kernel: int) -> Entries:
    """sgm ``VideoResBlock``: spatial ResBlock, temporal ResBlock (time_stack), time_mixer."""
    yield from _affine(f"{prefix}.in_layers.0", ch_in)
    yield from _conv(f"{prefix}.in_layers.2", ch_out, ch_in, (3, 3))
    yield from _linear(f"{prefix}.emb_layers.1", ch_out, emb)
    yield from _affine(f"{prefix}.out_layers.0", ch_out)
    yield from _conv(f"{prefix}.out_layers.3", ch_out, ch_out, (3, 3))
    if ch_in != ch_out:
        yield from _conv(f"{prefix}.skip_connection", ch_out, ch_in, (1, 1))
    # The temporal ResBlock maps ch_out -> ch_out (no skip conv) with a (k,1,1) Conv3d.
    kernel = (video_kernel, 1, 1)
    yield from _affine(f"{prefix}.time_stack.in_layers.0", ch_out)
    yield from _conv(f"{prefix}.time_stack.in_layers.2", ch_out, ch_out, kernel)
    yield from _linear(f"{prefix}.time_stack.emb_layers.1", ch_out, emb)
    yield from _affine(f"{prefix}.time_stack.out_layers.0", ch_out)
    yield from _conv(f"{prefix}.time_stack.out_layers.3", ch_out, ch_out, kernel)
    yield f"{prefix}.time_mixer.mix_factor", (1,)


def _attention(prefix: str, inner: int, context: int) -> Entries:
    """sgm CrossAttention: q/k/v without bias, to_out.0 with bias."""
    yield from _linear(f"{prefix}.to_q", inner, inner, bias=False)
    yield from _linear(f"{prefix}.to_k", inner, context, bias=False)
    yield from _linear(f"{prefix}.to_v", inner, context, bias=False)
    yield from _linear(f"{prefix}.to_out.0", inner, inner)


def _geglu_feedforward(prefix: str, dim: int) -> Entries:
    """sgm FeedForward(glu=True, mult=4): GEGLU projection to 2·4·dim, then 4·dim -> dim."""
    hidden = 4 * dim
    yield from _linear(f"{prefix}.net.0.proj", 2 * hidden, dim)
    yield from _linear(f"{prefix}.net.2", dim, hidden)


def _unet_transformer(prefix: str, channels: int, context_dim: int, depth: int) -> Entries:
    """sgm ``SpatialVideoTransformer`` with linear proj_in/out and spatial context in time."""
    inner = channels  # heads · head_dim == channels in SVD (num_head_channels divides it)
    yield from _affine(f"{prefix}.norm", channels)
    yield from _linear(f"{prefix}.proj_in", inner, channels)
    for k in range(depth):
        block = f"{prefix}.transformer_blocks.{k}"
        yield from _attention(f"{block}.attn1", inner, inner)
        yield from _geglu_feedforward(f"{block}.ff", inner)
        yield from _attention(f"{block}.attn2", inner, context_dim)
        for norm in ("norm1", "norm2", "norm3"):
            yield from _affine(f"{block}.{norm}", inner)
    for k in range(depth):
        block = f"{prefix}.time_stack.{k}"
        yield from _affine(f"{block}.norm_in", inner)
        yield from _geglu_feedforward(f"{block}.ff_in", inner)
        yield from _attention(f"{block}.attn1", inner, inner)
        yield from _geglu_feedforward(f"{block}.ff", inner)
        yield from _affine(f"{block}.norm2", inner)
        yield from _attention(f"{block}.attn2", inner, context_dim)
        yield from _affine(f"{block}.norm1", inner)
        yield from _affine(f"{block}.norm3", inner)
    yield from _linear(f"{prefix}.time_pos_embed.0", 4 * channels, channels)
    yield from _linear(f"{prefix}.time_pos_embed.2", channels, 4 * channels)
    yield f"{prefix}.time_mixer.mix_factor", (1,)
    yield from _linear(f"{prefix}.proj_out", channels, inner)


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------
def _unet_layer(layer: Layer, u: UNetConfig) -> Entries:
    """The parameters of one layer of the block plan."""
    name, cin, cout = layer.sgm, layer.channels_in, layer.channels_out
    if layer.kind == RESNET:
        yield from _unet_resblock(name, cin, cout, u.time_embed_dim, u.video_kernel_size)
    elif layer.kind == TRANSFORMER:
        yield from _unet_transformer(name, cout, u.context_dim, u.transformer_depth)
    elif layer.kind == DOWNSAMPLE:
        yield from _conv(f"{name}.op", cout, cin, (3, 3))
    elif layer.kind == UPSAMPLE:
        yield from _conv(f"{name}.conv", cout, cin, (3, 3))
    elif layer.kind == CONV_IN:
        yield from _conv(name, cout, cin, (3, 3))
    else:
        raise ValueError(f"unknown U-Net layer kind {layer.kind!r}")


def unet_entries(cfg: ModelConfig) -> Entries:
    """sgm VideoUNet: the embeddings, the blocks of the plan (models/plan.py), the out head."""
    u = cfg.unet
    mc, emb = u.model_channels, u.time_embed_dim
    yield from _linear("time_embed.0", emb, mc)
    yield from _linear("time_embed.2", emb, emb)
    yield from _linear("label_emb.0.0", emb, u.adm_in_channels)
    yield from _linear("label_emb.0.2", emb, emb)
    plan = unet_plan(u)
    for layer in plan.layers():
        yield from _unet_layer(layer, u)
    yield from _affine("out.0", plan.channels_out)
    # sgm builds the output conv from model_channels (== the last block's width whenever
    # channel_mult[0] == 1).
    yield from _conv("out.2", u.out_channels, mc, (3, 3))


def _vae_resnet(prefix: str, ch_in: int, ch_out: int) -> Entries:
    """sgm ``ResnetBlock`` without time embedding (temb_channels = 0)."""
    yield from _affine(f"{prefix}.norm1", ch_in)
    yield from _conv(f"{prefix}.conv1", ch_out, ch_in, (3, 3))
    yield from _affine(f"{prefix}.norm2", ch_out)
    yield from _conv(f"{prefix}.conv2", ch_out, ch_out, (3, 3))
    if ch_in != ch_out:
        yield from _conv(f"{prefix}.nin_shortcut", ch_out, ch_in, (1, 1))


def _vae_video_resnet(prefix: str, ch_in: int, ch_out: int, video_kernel: int) -> Entries:
    """temporal_ae ``VideoResBlock``: ResnetBlock + time_stack ResBlock (no emb) + mix_factor."""
    yield from _vae_resnet(prefix, ch_in, ch_out)
    kernel = (video_kernel, 1, 1)
    yield from _affine(f"{prefix}.time_stack.in_layers.0", ch_out)
    yield from _conv(f"{prefix}.time_stack.in_layers.2", ch_out, ch_out, kernel)
    yield from _affine(f"{prefix}.time_stack.out_layers.0", ch_out)
    yield from _conv(f"{prefix}.time_stack.out_layers.3", ch_out, ch_out, kernel)
    yield f"{prefix}.mix_factor", (1,)


def _vae_attention(prefix: str, channels: int) -> Entries:
    """sgm ``AttnBlock``: GroupNorm and four 1×1 convolutions."""
    yield from _affine(f"{prefix}.norm", channels)
    for conv in ("q", "k", "v", "proj_out"):
        yield from _conv(f"{prefix}.{conv}", channels, channels, (1, 1))


def vae_encoder_entries(cfg: ModelConfig) -> Entries:
    """sgm Encoder (double_z) under ``encoder.`` and the quant_conv, as in the cond-frame AE."""
    v = cfg.vae
    yield from _conv("encoder.conv_in", v.ch, v.in_channels, (3, 3))
    in_mult = (1,) + tuple(v.ch_mult)
    block_in = v.ch
    for level, mult in enumerate(v.ch_mult):
        block_in = v.ch * in_mult[level]
        block_out = v.ch * mult
        for j in range(v.num_res_blocks):
            yield from _vae_resnet(f"encoder.down.{level}.block.{j}", block_in, block_out)
            block_in = block_out
        if level != len(v.ch_mult) - 1:
            yield from _conv(f"encoder.down.{level}.downsample.conv", block_in, block_in, (3, 3))
    yield from _vae_resnet("encoder.mid.block_1", block_in, block_in)
    yield from _vae_attention("encoder.mid.attn_1", block_in)
    yield from _vae_resnet("encoder.mid.block_2", block_in, block_in)
    yield from _affine("encoder.norm_out", block_in)
    yield from _conv("encoder.conv_out", 2 * v.z_channels, block_in, (3, 3))
    yield from _conv("quant_conv", 2 * v.embed_dim, 2 * v.z_channels, (1, 1))


def vae_decoder_entries(cfg: ModelConfig) -> Entries:
    """temporal_ae VideoDecoder (time_mode "conv-only")."""
    v = cfg.vae
    k = v.video_kernel_size
    levels = len(v.ch_mult)
    block_in = v.ch * v.ch_mult[-1]
    yield from _conv("conv_in", block_in, v.z_channels, (3, 3))
    yield from _vae_video_resnet("mid.block_1", block_in, block_in, k)
    yield from _vae_attention("mid.attn_1", block_in)
    yield from _vae_video_resnet("mid.block_2", block_in, block_in, k)
    for level in reversed(range(levels)):
        block_out = v.ch * v.ch_mult[level]
        for j in range(v.num_res_blocks + 1):
            yield from _vae_video_resnet(f"up.{level}.block.{j}", block_in, block_out, k)
            block_in = block_out
        if level != 0:
            yield from _conv(f"up.{level}.upsample.conv", block_in, block_in, (3, 3))
    yield from _affine("norm_out", block_in)
    yield from _conv("conv_out", v.out_ch, block_in, (3, 3))
    yield from _conv("conv_out.time_mix_conv", v.out_ch, v.out_ch, (k, 1, 1))


def image_encoder_entries(cfg: ModelConfig) -> Entries:
    """OpenCLIP VisionTransformer (ViT-H/14 in SVD)."""
    c = cfg.image_encoder
    width = c.width
    grid = c.image_size // c.patch_size
    yield "class_embedding", (width,)
    yield "positional_embedding", (grid * grid + 1, width)
    yield "proj", (width, c.embed_dim)
    yield from _conv("conv1", width, 3, (c.patch_size, c.patch_size), bias=False)
    yield from _affine("ln_pre", width)
    for i in range(c.layers):
        block = f"transformer.resblocks.{i}"
        yield from _affine(f"{block}.ln_1", width)
        yield f"{block}.attn.in_proj_weight", (3 * width, width)
        yield f"{block}.attn.in_proj_bias", (3 * width,)
        yield from _linear(f"{block}.attn.out_proj", width, width)
        yield from _affine(f"{block}.ln_2", width)
        yield from _linear(f"{block}.mlp.c_fc", c.mlp_width, width)
        yield from _linear(f"{block}.mlp.c_proj", width, c.mlp_width)
    yield from _affine("ln_post", width)


_BUILDERS = {
    "unet": unet_entries,
    "vae_decoder": vae_decoder_entries,
    "vae_encoder": vae_encoder_entries,
    "image_encoder": image_encoder_entries,
}


def network_parameter_shapes(cfg: ModelConfig, network: str) -> Dict[str, Shape]:
    """Names relative to the network (what its MindSpore cell calls them) → shapes."""
    if network not in _BUILDERS:
        raise ValueError(f"unknown network {network!r}; expected one of {', '.join(NETWORKS)}")
    table: Dict[str, Shape] = {}
    for name, shape in _BUILDERS[network](cfg):
        if name in table:  # a bug in this module, not a user error
            raise AssertionError(f"duplicate parameter name {name} in {network}")
        table[name] = shape
    return table


def sgm_parameter_shapes(cfg: ModelConfig) -> Dict[str, Shape]:
    """Full Stability name → shape for every parameter of the four networks."""
    table: Dict[str, Shape] = {}
    for network in NETWORKS:
        prefix = NETWORK_PREFIXES[network]
        for name, shape in network_parameter_shapes(cfg, network).items():
            table[prefix + name] = shape
    return table


def count_parameters(table: Dict[str, Shape]) -> int:
    return sum(numel(shape) for shape in table.values())
