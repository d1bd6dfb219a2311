"""Name mappings from other checkpoint layouts to Stability's (sgm) names, and tensor transforms.

Three source layouts besides sgm itself:

* **diffusers** (``unet/``, ``vae/``, ``image_encoder/`` folders). :func:`diffusers_recipes`
  walks the analytic sgm table (:mod:`svdeploy.models.keys`; the U-Net's module names on both
  sides come from its block plan, :mod:`svdeploy.models.plan`) and says, for every sgm tensor,
  which diffusers tensor(s) make it and how (copy, 1×1-conv reshape, transpose, q/k/v packing).
  The rules are those of ``sgm_diffusers_mapping.md`` (decoder up blocks in reverse order, VAE
  mid-attention linears → 1×1 convs, OpenCLIP ``in_proj`` packing q, k, v in that order,
  ``proj = visual_projection.weight.T``, ``pre_layrnorm`` spelled as transformers spells it).
  :func:`model_config_from_diffusers` turns the three ``config.json`` files into a ModelConfig.

* **mindone** (MindSpore port, ``svd-*.ckpt``): :func:`mindone_to_sgm`. Sources, read in
  mindspore-lab/mindone: ``examples/svd/svd_tools/convert.py`` builds the MindSpore network and
  pairs its sorted parameter names with the sorted PyTorch names, so the names can only differ
  where sorting is preserved. The modules (``examples/svd/modules/unet3d.py``,
  ``temporal_ae.py``, ``examples/stable_diffusion_xl/gm/modules/attention.py``,
  ``diffusionmodules/{openaimodel,model,util}.py``, ``embedders/open_clip/transformer.py``) keep
  Stability's attribute names, with two differences:
    - ``nn.LayerNorm`` / ``nn.GroupNorm`` parameters are ``gamma`` / ``beta`` (MindSpore's names)
      instead of ``weight`` / ``bias``;
    - the decoder's output convolution (``Conv3DLayer``) names its temporal Conv3d ``conv3d``,
      not ``time_mix_conv``: ``first_stage_model.decoder.conv_out.conv3d.{weight,bias}``.
  Shapes are PyTorch's (``nn.Dense`` weights are [out, in]; ``nn.Conv3d`` weights
  [out, in, kd, kh, kw]; OpenCLIP's ``in_proj_weight`` / ``in_proj_bias`` / ``proj`` /
  ``class_embedding`` / ``positional_embedding`` are plain Parameters of the same shapes), since
  convert.py feeds the PyTorch arrays unchanged into ``load_param_into_net``. Not verified: a
  released mindone ``.ckpt`` itself (no download here); the reader's strict check names any
  tensor that does not fit.

* **svdeploy** (our own directory): already canonical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from svdeploy.config import (
    ImageEncoderConfig,
    ModelConfig,
    UNetConfig,
    VAEConfig,
    load_model_config,
)
from svdeploy.errors import ConfigError

from .keys import NETWORK_PREFIXES, NETWORKS, network_of, network_parameter_shapes
from .plan import CONV_IN, DOWNSAMPLE, RESNET, TRANSFORMER, UPSAMPLE, Layer, unet_plan

Shape = Tuple[int, ...]

# Ops a recipe may apply to its source tensor(s).
COPY, CONV1X1, TRANSPOSE, CONCAT0 = "copy", "conv1x1", "transpose", "concat0"


@dataclass(frozen=True)
class Recipe:
    """How one sgm tensor is made: from which source tensors, by which op."""

    target: str
    sources: Tuple[Tuple[str, str], ...]  # (file key, tensor name); file key "" for single files
    op: str = COPY


def recipe_shape(recipe: Recipe, source_shapes: Sequence[Shape]) -> Optional[Shape]:
    """The shape the recipe produces from these source shapes, or None if it cannot apply."""
    if recipe.op == COPY:
        return tuple(source_shapes[0])
    if recipe.op == CONV1X1:
        shape = tuple(source_shapes[0])
        return shape + (1, 1) if len(shape) == 2 else None
    if recipe.op == TRANSPOSE:
        shape = tuple(source_shapes[0])
        return shape[::-1] if len(shape) == 2 else None
    if recipe.op == CONCAT0:
        rests = {tuple(s[1:]) for s in source_shapes}
        if len(rests) != 1 or any(len(s) == 0 for s in source_shapes):
            return None
        return (sum(s[0] for s in source_shapes),) + rests.pop()
    raise ValueError(f"unknown recipe op {recipe.op!r}")


def apply_recipe(recipe: Recipe, arrays: Sequence[np.ndarray]) -> np.ndarray:
    if recipe.op == COPY:
        return arrays[0]
    if recipe.op == CONV1X1:
        return arrays[0].reshape(arrays[0].shape + (1, 1))
    if recipe.op == TRANSPOSE:
        return np.ascontiguousarray(arrays[0].T)
    if recipe.op == CONCAT0:
        return np.concatenate(arrays, axis=0)
    raise ValueError(f"unknown recipe op {recipe.op!r}")


# ---------------------------------------------------------------------------------------------
# mindone
# ---------------------------------------------------------------------------------------------
_MINDONE_DECODER_CONV3D = NETWORK_PREFIXES["vae_decoder"] + "conv_out.conv3d."
_SGM_DECODER_TIME_MIX = NETWORK_PREFIXES["vae_decoder"] + "conv_out.time_mix_conv."


def mindone_to_sgm(name: str) -> str:
    """mindone parameter name → Stability name (identity for names already in sgm form)."""
    if name.startswith(_MINDONE_DECODER_CONV3D):
        name = _SGM_DECODER_TIME_MIX + name[len(_MINDONE_DECODER_CONV3D) :]
    if network_of(name) is None:
        return name
    # Only norm layers use gamma/beta in these networks (ViT-H has no LayerScale).
    if name.endswith(".gamma"):
        return name[: -len("gamma")] + "weight"
    if name.endswith(".beta"):
        return name[: -len("beta")] + "bias"
    return name


def looks_like_mindone(names: Sequence[str]) -> bool:
    """True if names use MindSpore's norm naming or mindone's decoder conv3d inside the networks."""
    for name in names:
        if name.startswith(_MINDONE_DECODER_CONV3D):
            return True
        if network_of(name) is not None and name.endswith((".gamma", ".beta")):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# diffusers: sgm name → diffusers name(s)
# ---------------------------------------------------------------------------------------------
DIFFUSERS_COMPONENTS: Tuple[str, ...] = ("unet", "vae", "image_encoder")
# Buffers transformers may have saved that are not parameters (older CLIP checkpoints).
DIFFUSERS_IGNORABLE: Tuple[Tuple[str, str], ...] = (
    ("image_encoder", "vision_model.embeddings.position_ids"),
)

_UNET_RESNET = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_VAE_RESNET = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "nin_shortcut": "conv_shortcut",
}
_VAE_TIME_STACK = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
}
_VAE_ATTENTION = {
    "norm": "group_norm",
    "q": "to_q",
    "k": "to_k",
    "v": "to_v",
    "proj_out": "to_out.0",
}


def _split_param(rest: str) -> Tuple[str, str]:
    module, _, param = rest.rpartition(".")
    return module, param


def _unet_resnet(rest: str) -> str:
    if rest == "time_mixer.mix_factor":
        return rest
    block = "spatial_res_block"
    if rest.startswith("time_stack."):
        block, rest = "temporal_res_block", rest[len("time_stack.") :]
    module, param = _split_param(rest)
    return f"{block}.{_UNET_RESNET[module]}.{param}"


def _unet_transformer(rest: str) -> str:
    match = re.match(r"time_stack\.(\d+)\.(.*)$", rest)
    if match:
        return f"temporal_transformer_blocks.{match.group(1)}.{match.group(2)}"
    match = re.match(r"time_pos_embed\.([02])\.(.*)$", rest)
    if match:
        return f"time_pos_embed.linear_{1 if match.group(1) == '0' else 2}.{match.group(2)}"
    return rest  # norm, proj_in, proj_out, transformer_blocks.*, time_mixer.mix_factor


# The U-Net's stem and head, outside the planned blocks.
_UNET_FIXED = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "label_emb.0.0": "add_embedding.linear_1",
    "label_emb.0.2": "add_embedding.linear_2",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
}
# Inside a planned layer: sgm's parameter name after the layer's name → diffusers'. The
# downsampler's convolution is ``op`` in sgm and ``conv`` in diffusers.
_UNET_LAYER_PARAMS: Dict[str, Callable[[str], str]] = {
    RESNET: _unet_resnet,
    TRANSFORMER: _unet_transformer,
    DOWNSAMPLE: lambda rest: "conv." + rest[len("op.") :],
    UPSAMPLE: lambda rest: rest,
    CONV_IN: lambda rest: rest,
}


def _unet_name(name: str, layers: Mapping[str, Layer]) -> str:
    """sgm VideoUNet name (without prefix) → diffusers UNetSpatioTemporalConditionModel name;
    ``layers``: the block plan's layers by sgm name."""
    module, param = _split_param(name)
    if module in _UNET_FIXED:
        return f"{_UNET_FIXED[module]}.{param}"
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest layer name that prefixes it
        layer = layers.get(".".join(parts[:cut]))
        if layer is not None:
            return f"{layer.diffusers}.{_UNET_LAYER_PARAMS[layer.kind]('.'.join(parts[cut:]))}"
    raise KeyError(name)


def _vae_resnet(rest: str, video: bool) -> str:
    if video:
        if rest == "mix_factor":
            return "time_mixer.mix_factor"
        if rest.startswith("time_stack."):
            module, param = _split_param(rest[len("time_stack.") :])
            return f"temporal_res_block.{_VAE_TIME_STACK[module]}.{param}"
        module, param = _split_param(rest)
        return f"spatial_res_block.{_VAE_RESNET[module]}.{param}"
    module, param = _split_param(rest)
    return f"{_VAE_RESNET[module]}.{param}"


def _vae_mid(rest: str, video: bool) -> Tuple[str, str]:
    """mid.* (without the 'mid.' part) → (diffusers name inside mid_block, op)."""
    match = re.match(r"block_([12])\.(.*)$", rest)
    if match:
        return f"resnets.{int(match.group(1)) - 1}.{_vae_resnet(match.group(2), video)}", COPY
    module, param = _split_param(rest[len("attn_1.") :])
    op = CONV1X1 if module != "norm" and param == "weight" else COPY
    return f"attentions.0.{_VAE_ATTENTION[module]}.{param}", op


def _vae_encoder_name(name: str) -> Tuple[str, str]:
    """conditioner encoder name (without prefix) → (diffusers vae name, op)."""
    if name.startswith("quant_conv."):
        return name, COPY
    rest = name[len("encoder.") :]
    module, param = _split_param(rest)
    fixed = {"conv_in": "conv_in", "norm_out": "conv_norm_out", "conv_out": "conv_out"}
    if module in fixed:
        return f"encoder.{fixed[module]}.{param}", COPY
    match = re.match(r"down\.(\d+)\.block\.(\d+)\.(.*)$", rest)
    if match:
        return (
            f"encoder.down_blocks.{match.group(1)}.resnets.{match.group(2)}."
            f"{_vae_resnet(match.group(3), video=False)}"
        ), COPY
    match = re.match(r"down\.(\d+)\.downsample\.conv\.(.*)$", rest)
    if match:
        return f"encoder.down_blocks.{match.group(1)}.downsamplers.0.conv.{match.group(2)}", COPY
    if rest.startswith("mid."):
        inner, op = _vae_mid(rest[len("mid.") :], video=False)
        return f"encoder.mid_block.{inner}", op
    raise KeyError(name)


def _vae_decoder_name(name: str, levels: int) -> Tuple[str, str]:
    """VideoDecoder name (without prefix) → (diffusers vae name, op); up blocks reversed."""
    if name.startswith("conv_out.time_mix_conv."):
        return f"decoder.time_conv_out.{name[len('conv_out.time_mix_conv.') :]}", COPY
    module, param = _split_param(name)
    fixed = {"conv_in": "conv_in", "norm_out": "conv_norm_out", "conv_out": "conv_out"}
    if module in fixed:
        return f"decoder.{fixed[module]}.{param}", COPY
    match = re.match(r"up\.(\d+)\.block\.(\d+)\.(.*)$", name)
    if match:
        up = levels - 1 - int(match.group(1))
        return (
            f"decoder.up_blocks.{up}.resnets.{match.group(2)}."
            f"{_vae_resnet(match.group(3), video=True)}"
        ), COPY
    match = re.match(r"up\.(\d+)\.upsample\.conv\.(.*)$", name)
    if match:
        up = levels - 1 - int(match.group(1))
        return f"decoder.up_blocks.{up}.upsamplers.0.conv.{match.group(2)}", COPY
    if name.startswith("mid."):
        inner, op = _vae_mid(name[len("mid.") :], video=True)
        return f"decoder.mid_block.{inner}", op
    raise KeyError(name)


def _clip_recipe(name: str) -> Tuple[Tuple[str, ...], str]:
    """OpenCLIP visual name (without prefix) → (transformers CLIPVisionModelWithProjection
    names, op)."""
    fixed = {
        "class_embedding": "vision_model.embeddings.class_embedding",
        "positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    }
    if name in fixed:
        return (fixed[name],), COPY
    if name == "proj":
        return ("visual_projection.weight",), TRANSPOSE
    module, param = _split_param(name)
    norms = {"ln_pre": "vision_model.pre_layrnorm", "ln_post": "vision_model.post_layernorm"}
    if module in norms:
        return (f"{norms[module]}.{param}",), COPY
    match = re.match(r"transformer\.resblocks\.(\d+)\.(.*)$", name)
    if match:
        layer = f"vision_model.encoder.layers.{match.group(1)}"
        rest = match.group(2)
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            param = rest[len("attn.in_proj_") :]
            return tuple(f"{layer}.self_attn.{p}_proj.{param}" for p in "qkv"), CONCAT0
        module, param = _split_param(rest)
        inner = {
            "ln_1": "layer_norm1",
            "ln_2": "layer_norm2",
            "attn.out_proj": "self_attn.out_proj",
            "mlp.c_fc": "mlp.fc1",
            "mlp.c_proj": "mlp.fc2",
        }[module]
        return (f"{layer}.{inner}.{param}",), COPY
    raise KeyError(name)


def diffusers_recipes(cfg: ModelConfig) -> Dict[str, Recipe]:
    """For every sgm tensor of ``cfg``: the diffusers component tensors that make it."""
    recipes: Dict[str, Recipe] = {}
    unet_layers = {layer.sgm: layer for layer in unet_plan(cfg.unet).layers()}
    for network in NETWORKS:
        prefix = NETWORK_PREFIXES[network]
        for name in network_parameter_shapes(cfg, network):
            if network == "unet":
                sources: Tuple[Tuple[str, str], ...] = (("unet", _unet_name(name, unet_layers)),)
                op = COPY
            elif network == "vae_encoder":
                dname, op = _vae_encoder_name(name)
                sources = (("vae", dname),)
            elif network == "vae_decoder":
                dname, op = _vae_decoder_name(name, len(cfg.vae.ch_mult))
                sources = (("vae", dname),)
            else:
                names, op = _clip_recipe(name)
                sources = tuple(("image_encoder", n) for n in names)
            recipes[prefix + name] = Recipe(prefix + name, sources, op)
    return recipes


# ---------------------------------------------------------------------------------------------
# diffusers config.json → ModelConfig
# ---------------------------------------------------------------------------------------------
_UNET_CLASS = "UNetSpatioTemporalConditionModel"
_VAE_CLASS = "AutoencoderKLTemporalDecoder"
# transformers' CLIPVisionConfig defaults: older transformers wrote only the keys that differ.
_CLIP_DEFAULTS: Dict[str, Any] = dict(
    hidden_size=768,
    intermediate_size=3072,
    projection_dim=512,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_channels=3,
    image_size=224,
    patch_size=32,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)


def _get(config: Mapping[str, Any], key: str, where: str, default: Any = None) -> Any:
    if key in config:
        return config[key]
    if default is not None:
        return default
    raise ConfigError(f"{where}: key {key!r} is missing")


def _uniform(value: Any, count: int, key: str, where: str) -> int:
    """A diffusers per-level option (int or list) that svdeploy needs to be one integer."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * count
    if len(values) != count or len(set(values)) != 1 or not isinstance(values[0], int):
        raise ConfigError(
            f"{where}: {key} = {value!r}: expected one integer for all {count} levels "
            "(SVD uses the same value at every level)"
        )
    return values[0]


def _attention_levels(down: List[str], up: List[str], where: str) -> List[int]:
    """The levels whose down blocks have cross-attention; the up blocks must mirror them."""
    levels = len(down)
    attention_levels = []
    for level, kind in enumerate(down):
        if kind == "CrossAttnDownBlockSpatioTemporal":
            attention_levels.append(level)
        elif kind != "DownBlockSpatioTemporal":
            raise ConfigError(
                f"{where}: down_block_types[{level}] = {kind!r}: expected "
                "'CrossAttnDownBlockSpatioTemporal' or 'DownBlockSpatioTemporal'"
            )
        mirrored = up[levels - 1 - level]
        expected = (
            "CrossAttnUpBlockSpatioTemporal"
            if kind.startswith("CrossAttn")
            else "UpBlockSpatioTemporal"
        )
        if mirrored != expected:
            raise ConfigError(
                f"{where}: up_block_types[{levels - 1 - level}] = {mirrored!r}: expected "
                f"{expected!r} to mirror down_block_types[{level}] (sgm U-Nets are symmetric)"
            )
    return attention_levels


def _head_channels(
    config: Mapping[str, Any], channels: List[int], attention_levels: List[int], where: str
) -> int:
    """sgm's num_head_channels: one head width for every attention level and the mid block
    (which uses the last level's heads)."""
    levels = len(channels)
    heads = _get(config, "num_attention_heads", where)
    heads_per_level = list(heads) if isinstance(heads, (list, tuple)) else [heads] * levels
    if len(heads_per_level) != levels:
        raise ConfigError(f"{where}: num_attention_heads = {heads!r}: expected {levels} entries")
    head_channels = set()
    for level in sorted(set(attention_levels) | {levels - 1}):
        if channels[level] % heads_per_level[level]:
            raise ConfigError(
                f"{where}: num_attention_heads[{level}] = {heads_per_level[level]} does not "
                f"divide block_out_channels[{level}] = {channels[level]}"
            )
        head_channels.add(channels[level] // heads_per_level[level])
    if len(head_channels) != 1:
        raise ConfigError(
            f"{where}: block_out_channels / num_attention_heads gives head widths "
            f"{sorted(head_channels)} across the attention levels; sgm's VideoUNet needs one "
            "num_head_channels for all of them"
        )
    return head_channels.pop()


def unet_config_from_diffusers(
    config: Mapping[str, Any], where: str
) -> Tuple[UNetConfig, int, int]:
    """→ (UNetConfig, num_frames, sample_size)."""
    cls = config.get("_class_name", _UNET_CLASS)
    if cls != _UNET_CLASS:
        raise ConfigError(
            f"{where}: _class_name = {cls!r}: expected {_UNET_CLASS!r} (an SVD U-Net)"
        )
    channels = list(_get(config, "block_out_channels", where))
    down = list(_get(config, "down_block_types", where))
    up = list(_get(config, "up_block_types", where))
    levels = len(channels)
    if not channels or len(down) != levels or len(up) != levels:
        raise ConfigError(
            f"{where}: block_out_channels {channels}, down_block_types {down} and "
            f"up_block_types {up} must have the same length"
        )
    model_channels = channels[0]
    if any(c % model_channels for c in channels):
        raise ConfigError(
            f"{where}: block_out_channels = {channels}: every entry must be a multiple "
            f"of the first ({model_channels})"
        )
    attention_levels = _attention_levels(down, up, where)
    head_channels = _head_channels(config, channels, attention_levels, where)
    adm = _get(config, "projection_class_embeddings_input_dim", where)
    time_dim = _get(config, "addition_time_embed_dim", where)
    if adm != 3 * time_dim:
        raise ConfigError(
            f"{where}: projection_class_embeddings_input_dim = {adm}: expected 3 × "
            f"addition_time_embed_dim = {3 * time_dim}"
        )
    unet = UNetConfig(
        in_channels=_get(config, "in_channels", where, 8),
        out_channels=_get(config, "out_channels", where, 4),
        model_channels=model_channels,
        channel_mult=tuple(c // model_channels for c in channels),
        num_res_blocks=_uniform(
            _get(config, "layers_per_block", where), levels, "layers_per_block", where
        ),
        attention_resolutions=tuple(sorted((2**level for level in attention_levels), reverse=True)),
        num_head_channels=head_channels,
        transformer_depth=_uniform(
            _get(config, "transformer_layers_per_block", where, 1),
            levels,
            "transformer_layers_per_block",
            where,
        ),
        context_dim=_get(config, "cross_attention_dim", where),
        adm_in_channels=adm,
    )
    return (
        unet,
        int(_get(config, "num_frames", where, 25)),
        int(_get(config, "sample_size", where, 96)),
    )


def vae_config_from_diffusers(config: Mapping[str, Any], where: str) -> VAEConfig:
    cls = config.get("_class_name", _VAE_CLASS)
    if cls != _VAE_CLASS:
        raise ConfigError(
            f"{where}: _class_name = {cls!r}: expected {_VAE_CLASS!r} (SVD's VAE with the "
            "temporal decoder)"
        )
    channels = list(_get(config, "block_out_channels", where))
    if not channels or any(c % channels[0] for c in channels):
        raise ConfigError(
            f"{where}: block_out_channels = {channels}: every entry must be a multiple of the first"
        )
    latent = _get(config, "latent_channels", where, 4)
    return VAEConfig(
        ch=channels[0],
        ch_mult=tuple(c // channels[0] for c in channels),
        num_res_blocks=_get(config, "layers_per_block", where, 2),
        z_channels=latent,
        embed_dim=latent,
        in_channels=_get(config, "in_channels", where, 3),
        out_ch=_get(config, "out_channels", where, 3),
        scale_factor=float(_get(config, "scaling_factor", where, 0.18215)),
    )


def clip_config_from_diffusers(config: Mapping[str, Any], where: str) -> ImageEncoderConfig:
    model_type = config.get("model_type", "clip_vision_model")
    if model_type != "clip_vision_model":
        raise ConfigError(
            f"{where}: model_type = {model_type!r}: expected 'clip_vision_model' "
            "(CLIPVisionModelWithProjection)"
        )
    values = {k: config.get(k, default) for k, default in _CLIP_DEFAULTS.items()}
    act = values["hidden_act"]
    if act not in ("gelu", "quick_gelu"):
        raise ConfigError(f"{where}: hidden_act = {act!r}: expected 'gelu' or 'quick_gelu'")
    if values["num_channels"] != 3:
        raise ConfigError(f"{where}: num_channels = {values['num_channels']}: expected 3 (RGB)")
    return ImageEncoderConfig(
        width=values["hidden_size"],
        layers=values["num_hidden_layers"],
        heads=values["num_attention_heads"],
        mlp_width=values["intermediate_size"],
        patch_size=values["patch_size"],
        image_size=values["image_size"],
        embed_dim=values["projection_dim"],
        act=act,
        layer_norm_eps=float(values["layer_norm_eps"]),
    )


def model_config_from_diffusers(
    unet: Mapping[str, Any],
    vae: Mapping[str, Any],
    image_encoder: Mapping[str, Any],
    where: str = "diffusers folder",
) -> ModelConfig:
    """The three diffusers ``config.json`` dicts → a validated ModelConfig.

    Frame count from the U-Net config. Video size: Stability's 576×1024 when the networks are
    those of the svd / svd_xt presets (the diffusers pipeline's own default size), otherwise
    ``sample_size`` × the VAE factor. Sampling defaults and scheduler come from the svd_xt preset
    for 25 frames and from the svd preset otherwise.
    """
    unet_cfg, num_frames, sample_size = unet_config_from_diffusers(
        unet, f"{where}/unet/config.json"
    )
    vae_cfg = vae_config_from_diffusers(vae, f"{where}/vae/config.json")
    clip_cfg = clip_config_from_diffusers(image_encoder, f"{where}/image_encoder/config.json")
    preset = load_model_config("svd_xt" if num_frames == 25 else "svd")
    same_networks = (
        preset.unet == unet_cfg and preset.vae == vae_cfg and preset.image_encoder == clip_cfg
    )
    if same_networks:
        variant, height, width = preset.variant, preset.height, preset.width
    else:
        size = sample_size * vae_cfg.downsample_factor
        variant, height, width = "custom", size, size
    cfg = ModelConfig(
        variant=variant,
        num_frames=num_frames,
        height=height,
        width=width,
        unet=unet_cfg,
        vae=vae_cfg,
        image_encoder=clip_cfg,
        sampling=preset.sampling,
        scheduler=preset.scheduler,
    )
    cfg.validate("config (from diffusers config.json)")
    return cfg


def network_config_differences(expected: ModelConfig, found: ModelConfig) -> List[str]:
    """Fields of the three network configs that differ (numerics-only eps options excluded)."""
    skip = {"resblock_eps", "max_time_embed_period"}  # not stored in diffusers' config.json
    out = []
    for section in ("unet", "vae", "image_encoder"):
        a, b = getattr(expected, section), getattr(found, section)
        for key in vars(a):
            if key in skip:
                continue
            if getattr(a, key) != getattr(b, key):
                out.append(f"{section}.{key}: {getattr(a, key)!r} vs {getattr(b, key)!r}")
    return out
