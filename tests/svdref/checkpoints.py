"""Reference checkpoint writers: one set of tiny diffusers weights in every source layout.

Test-only (torch, diffusers, transformers, safetensors, mindspore). Written independently of
``svdeploy.models`` (in particular of ``keymap``): the diffusers → Stability name mapping below
parses diffusers names, while the product derives diffusers names from the analytic sgm table,
and files are written with the reference libraries (``safetensors``, ``torch.save``,
``mindspore.save_checkpoint``). Each writer takes the components dict of
``svdref.diffusers_tiny.build_components`` and returns the path it wrote, so parity tests
can reuse them::

    components = build_components(seed=0)
    folder = save_diffusers_folder(components, tmp_path / "diffusers")
    sgm_file = write_sgm_safetensors(components, tmp_path / "svd.safetensors")
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import numpy as np

UNET_PREFIX = "model.diffusion_model."
DECODER_PREFIX = "first_stage_model.decoder."
ENCODER_PREFIX = "conditioner.embedders.3.encoder."
CLIP_PREFIX = "conditioner.embedders.0.open_clip.model.visual."

# Tensors a Stability file holds outside the four networks; converters must ignore them.
EXTRA_SGM_TENSORS: Dict[str, Tuple[int, ...]] = {
    "conditioner.embedders.0.open_clip.model.token_embedding.weight": (10, 8),
    "conditioner.embedders.0.open_clip.model.positional_embedding": (7, 8),
    "conditioner.embedders.0.open_clip.model.ln_final.weight": (8,),
    "conditioner.embedders.0.open_clip.model.text_projection": (8, 4),
    "first_stage_model.encoder.conv_in.weight": (4, 3, 3, 3),
    "conditioner.embedders.3.encoder.post_quant_conv.weight": (4, 4, 1, 1),
    "conditioner.embedders.3.encoder.decoder.conv_in.weight": (4, 4, 3, 3),
    "model_ema.diffusion_modelinput_blocks00weight": (3, 2),
}
EXTRA_MINDONE_TENSORS: Dict[str, Tuple[int, ...]] = {
    "conditioner.embedders.0.open_clip.model.token_embedding.embedding_table": (10, 8),
    "conditioner.embedders.0.open_clip.model.ln_final.gamma": (8,),
    "conditioner.embedders.0.open_clip.model.ln_final.beta": (8,),
    "first_stage_model.encoder.norm_out.gamma": (32,),
    "conditioner.embedders.3.encoder.post_quant_conv.weight": (4, 4, 1, 1),
}


# ---------------------------------------------------------------------------------------------
# diffusers → Stability names (reference implementation)
# ---------------------------------------------------------------------------------------------
_RES_SPATIAL = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_DEC_TEMPORAL = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
}
_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_res(rest: str) -> str:
    if rest.startswith("time_mixer."):
        return rest
    part, module_param = rest.split(".", 1)
    module, param = module_param.rsplit(".", 1)
    mapped = f"{_RES_SPATIAL[module]}.{param}"
    return mapped if part == "spatial_res_block" else f"time_stack.{mapped}"


def _unet_attn(rest: str) -> str:
    rest = re.sub(r"^temporal_transformer_blocks\.", "time_stack.", rest)
    rest = rest.replace("time_pos_embed.linear_1.", "time_pos_embed.0.")
    return rest.replace("time_pos_embed.linear_2.", "time_pos_embed.2.")


def unet_to_sgm(name: str, unet_config: Mapping[str, Any]) -> str:
    per_level = unet_config["layers_per_block"] + 1
    up_has_attention = [t.startswith("CrossAttn") for t in unet_config["up_block_types"]]
    simple = {
        "conv_in.": "input_blocks.0.0.",
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "add_embedding.linear_1.": "label_emb.0.0.",
        "add_embedding.linear_2.": "label_emb.0.2.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
    }
    for old, new in simple.items():
        if name.startswith(old):
            return new + name[len(old) :]
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", name)
    if m:
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "downsamplers":
            return (
                f"input_blocks.{1 + level * per_level + per_level - 1}.0.op.{rest[len('conv.') :]}"
            )
        index = 1 + level * per_level + j
        return (
            f"input_blocks.{index}.0.{_unet_res(rest)}"
            if kind == "resnets"
            else f"input_blocks.{index}.1.{_unet_attn(rest)}"
        )
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", name)
    if m:
        if m[1] == "attentions":
            return f"middle_block.1.{_unet_attn(m[3])}"
        return f"middle_block.{2 * int(m[2])}.{_unet_res(m[3])}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", name)
    if m:
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "upsamplers":
            layer = 2 if up_has_attention[level] else 1
            return f"output_blocks.{level * per_level + per_level - 1}.{layer}.{rest}"
        index = level * per_level + j
        return (
            f"output_blocks.{index}.0.{_unet_res(rest)}"
            if kind == "resnets"
            else f"output_blocks.{index}.1.{_unet_attn(rest)}"
        )
    raise KeyError(f"unknown diffusers U-Net name {name}")


def _vae_block(rest: str, temporal: bool) -> str:
    if temporal:
        if rest == "time_mixer.mix_factor":
            return "mix_factor"
        part, module_param = rest.split(".", 1)
        module, param = module_param.rsplit(".", 1)
        if part == "temporal_res_block":
            return f"time_stack.{_DEC_TEMPORAL[module]}.{param}"
        rest = module_param
    return rest.replace("conv_shortcut.", "nin_shortcut.")


def vae_to_sgm(name: str, levels: int) -> Tuple[str, bool]:
    """diffusers AutoencoderKLTemporalDecoder name → (full Stability name, is a 1×1 conv
    reshape)."""
    if name.startswith("quant_conv."):
        return ENCODER_PREFIX + name, False
    side, rest = name.split(".", 1)
    temporal = side == "decoder"
    prefix = DECODER_PREFIX if temporal else ENCODER_PREFIX + "encoder."
    if rest.startswith("time_conv_out."):
        return prefix + "conv_out.time_mix_conv." + rest[len("time_conv_out.") :], False
    for old, new in (
        ("conv_in.", "conv_in."),
        ("conv_norm_out.", "norm_out."),
        ("conv_out.", "conv_out."),
    ):
        if rest.startswith(old):
            return prefix + new + rest[len(old) :], False
    m = re.match(
        r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$", rest
    )
    if m:
        reshape = m[1] != "group_norm" and m[2] == "weight"
        return f"{prefix}mid.attn_1.{_ATTN[m[1]]}.{m[2]}", reshape
    m = re.match(r"mid_block\.resnets\.(\d)\.(.*)", rest)
    if m:
        return f"{prefix}mid.block_{int(m[1]) + 1}.{_vae_block(m[2], temporal)}", False
    m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", rest)
    if m:
        level = int(m[2]) if m[1] == "down" else levels - 1 - int(m[2])
        if m[3] == "resnets":
            return f"{prefix}{m[1]}.{level}.block.{m[4]}.{_vae_block(m[5], temporal)}", False
        sampler = "downsample" if m[1] == "down" else "upsample"
        return f"{prefix}{m[1]}.{level}.{sampler}.{m[5]}", False
    raise KeyError(f"unknown diffusers VAE name {name}")


def clip_to_sgm(state: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """transformers CLIPVisionModelWithProjection state → OpenCLIP visual tensors (full names)."""
    out: Dict[str, np.ndarray] = {}
    emb = "vision_model.embeddings."
    out["class_embedding"] = state[emb + "class_embedding"]
    out["positional_embedding"] = state[emb + "position_embedding.weight"]
    out["conv1.weight"] = state[emb + "patch_embedding.weight"]
    out["proj"] = np.ascontiguousarray(state["visual_projection.weight"].T)
    for side, ln in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
        for p in ("weight", "bias"):
            out[f"{ln}.{p}"] = state[f"vision_model.{side}.{p}"]
    layers = sorted(
        {int(k.split(".")[3]) for k in state if k.startswith("vision_model.encoder.layers.")}
    )
    for i in layers:
        src, dst = f"vision_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for p in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{p}"] = np.concatenate(
                [state[f"{src}self_attn.{x}_proj.{p}"] for x in ("q", "k", "v")], axis=0
            )
            for a, b in (
                ("layer_norm1", "ln_1"),
                ("layer_norm2", "ln_2"),
                ("self_attn.out_proj", "attn.out_proj"),
                ("mlp.fc1", "mlp.c_fc"),
                ("mlp.fc2", "mlp.c_proj"),
            ):
                out[f"{dst}{b}.{p}"] = state[f"{src}{a}.{p}"]
    return {CLIP_PREFIX + k: v for k, v in out.items()}


def _numpy_state(module: Any) -> Dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def sgm_state_dict(components: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """The four networks' tensors under Stability's full names (float32), from diffusers modules."""
    unet, vae = components["unet"], components["vae"]
    out: Dict[str, np.ndarray] = {}
    for name, value in _numpy_state(unet).items():
        out[UNET_PREFIX + unet_to_sgm(name, unet.config)] = value
    levels = len(vae.config.block_out_channels)
    for name, value in _numpy_state(vae).items():
        target, reshape = vae_to_sgm(name, levels)
        out[target] = value.reshape(value.shape + (1, 1)) if reshape else value
    clip_state = _numpy_state(components["image_encoder"])
    clip_state.pop("vision_model.embeddings.position_ids", None)
    out.update(clip_to_sgm(clip_state))
    return out


def norm_parameter_names(components: Mapping[str, Any]) -> set:
    """Stability names of every LayerNorm / GroupNorm parameter (what MindSpore calls
    gamma/beta)."""
    import torch

    unet, vae = components["unet"], components["vae"]
    names = set()
    for module_name, module in unet.named_modules():
        if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
            for p in ("weight", "bias"):
                names.add(UNET_PREFIX + unet_to_sgm(f"{module_name}.{p}", unet.config))
    levels = len(vae.config.block_out_channels)
    for module_name, module in vae.named_modules():
        if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
            for p in ("weight", "bias"):
                names.add(vae_to_sgm(f"{module_name}.{p}", levels)[0])
    clip_norms = {"ln_pre", "ln_post"}
    layers = components["image_encoder"].config.num_hidden_layers
    clip_norms |= {
        f"transformer.resblocks.{i}.{ln}" for i in range(layers) for ln in ("ln_1", "ln_2")
    }
    names |= {f"{CLIP_PREFIX}{n}.{p}" for n in clip_norms for p in ("weight", "bias")}
    return names


def _extras(shapes: Mapping[str, Tuple[int, ...]], seed: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------
def save_diffusers_folder(components: Mapping[str, Any], directory: Path) -> Path:
    """unet/, vae/, image_encoder/ via save_pretrained (safetensors)."""
    directory = Path(directory)
    for name in ("unet", "vae", "image_encoder"):
        components[name].save_pretrained(directory / name, safe_serialization=True)
    return directory


def write_sgm_safetensors(
    components: Mapping[str, Any], path: Path, dtype: Any = np.float32, extras: bool = True
) -> Path:
    """A Stability single file (the safetensors library writes it), plus ignored extra tensors."""
    from safetensors.numpy import save_file

    tensors = sgm_state_dict(components)
    if extras:
        tensors.update(_extras(EXTRA_SGM_TENSORS, 1))
    save_file({k: np.ascontiguousarray(v.astype(dtype)) for k, v in tensors.items()}, str(path))
    return Path(path)


def write_sgm_bf16_safetensors(components: Mapping[str, Any], path: Path) -> Path:
    """A Stability single file in bfloat16 (torch writes it; numpy has no bfloat16)."""
    import torch
    from safetensors.torch import save_file

    tensors = {
        k: torch.from_numpy(v).to(torch.bfloat16) for k, v in sgm_state_dict(components).items()
    }
    save_file(tensors, str(path))
    return Path(path)


def mindone_state_dict(components: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Stability names turned into mindone's: norms gamma/beta, decoder conv_out.conv3d."""
    norms = norm_parameter_names(components)
    out: Dict[str, np.ndarray] = {}
    for name, value in sgm_state_dict(components).items():
        if name in norms:
            name = (
                name[: -len("weight")] + "gamma"
                if name.endswith(".weight")
                else name[: -len("bias")] + "beta"
            )
        name = name.replace(
            DECODER_PREFIX + "conv_out.time_mix_conv.", DECODER_PREFIX + "conv_out.conv3d."
        )
        out[name] = value
    return out


def write_mindone_ckpt(
    components: Mapping[str, Any], path: Path, dtype: Any = np.float32, extras: bool = True
) -> Path:
    """A mindone-style MindSpore checkpoint (mindspore.save_checkpoint), plus ignored extras."""
    import mindspore as ms

    tensors = mindone_state_dict(components)
    if extras:
        tensors.update(_extras(EXTRA_MINDONE_TENSORS, 2))
    ms.save_checkpoint(
        [{"name": k, "data": ms.Tensor(v.astype(dtype))} for k, v in tensors.items()], str(path)
    )
    return Path(path)


def write_torch_checkpoint(components: Mapping[str, Any], path: Path, wrap: bool = True) -> Path:
    """A torch file with Stability names; ``wrap`` nests it under "state_dict" like sgm training."""
    import torch

    state = {k: torch.from_numpy(v) for k, v in sgm_state_dict(components).items()}
    state.update({k: torch.from_numpy(v) for k, v in _extras(EXTRA_SGM_TENSORS, 1).items()})
    torch.save({"state_dict": state, "global_step": 7, "epoch": 1} if wrap else state, str(path))
    return Path(path)


def diffusers_parameter_counts(components: Mapping[str, Any]) -> Dict[str, Tuple[int, int]]:
    """(tensor count, parameter count) of each diffusers component's state dict."""
    out = {}
    for name in ("unet", "vae", "image_encoder"):
        state = components[name].state_dict()
        state.pop("vision_model.embeddings.position_ids", None)
        out[name] = (len(state), int(sum(v.numel() for v in state.values())))
    return out
