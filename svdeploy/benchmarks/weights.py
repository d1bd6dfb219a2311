"""Identical weights for every peer of a benchmark.

When torch, diffusers and transformers import, the three diffusers networks are built with
random init at the preset's sizes (the parameters that default init leaves constant are
randomised too, so parity is meaningful), saved as a diffusers folder, and converted with
``convert_checkpoint``: diffusers and svdeploy then hold the same numbers. Otherwise the
weights come from ``write_random_sgm_file`` and no diffusers peer runs (the report says why).

Everything lands in a work directory with a stamp (the resolved config and the seed), so a
second ``svd-bench`` run with the same settings reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from svdeploy.config import ModelConfig, save_model_config, to_dict
from svdeploy.fsutil import atomic_write_json, make_temp_dir, replace_dir

DIFFUSERS_DIR = "diffusers"
CHECKPOINT_DIR = "checkpoint"
STAMP = "bench_weights.json"


def torch_stack_status() -> Tuple[bool, str]:
    """(available, reason): whether the diffusers peer can run here."""
    missing = []
    for module in ("torch", "diffusers", "transformers"):
        try:
            __import__(module)
        except Exception as exc:  # ImportError, or a broken install raising something else
            missing.append(f"{module} ({type(exc).__name__}: {exc})")
    if missing:
        return False, "not importable: " + "; ".join(missing)
    return True, ""


# ---------------------------------------------------------------------------------------------
# diffusers configs of a preset
# ---------------------------------------------------------------------------------------------
def diffusers_unet_config(cfg: ModelConfig) -> Dict[str, Any]:
    """UNetSpatioTemporalConditionModel kwargs describing ``cfg.unet`` (inverse of
    svdeploy.models.keymap.unet_config_from_diffusers)."""
    u = cfg.unet
    channels = u.level_channels()
    attention = [2**level in u.attention_resolutions for level in range(len(channels))]
    return dict(
        sample_size=cfg.latent_height,
        in_channels=u.in_channels,
        out_channels=u.out_channels,
        down_block_types=tuple(
            "CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal"
            for a in attention
        ),
        up_block_types=tuple(
            "CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal"
            for a in reversed(attention)
        ),
        block_out_channels=tuple(channels),
        addition_time_embed_dim=u.addition_time_embed_dim,
        projection_class_embeddings_input_dim=u.adm_in_channels,
        layers_per_block=u.num_res_blocks,
        cross_attention_dim=u.context_dim,
        transformer_layers_per_block=u.transformer_depth,
        # only attention levels and the last (mid block) use heads; others get a harmless 1+
        num_attention_heads=tuple(max(1, c // u.num_head_channels) for c in channels),
        num_frames=cfg.num_frames,
    )


def diffusers_vae_config(cfg: ModelConfig) -> Dict[str, Any]:
    v = cfg.vae
    return dict(
        in_channels=v.in_channels,
        out_channels=v.out_ch,
        down_block_types=("DownEncoderBlock2D",) * len(v.ch_mult),
        block_out_channels=tuple(v.ch * m for m in v.ch_mult),
        layers_per_block=v.num_res_blocks,
        latent_channels=v.z_channels,
        sample_size=cfg.height,
        scaling_factor=v.scale_factor,
        force_upcast=True,
    )


def diffusers_clip_config(cfg: ModelConfig) -> Dict[str, Any]:
    c = cfg.image_encoder
    return dict(
        hidden_size=c.width,
        projection_dim=c.embed_dim,
        num_hidden_layers=c.layers,
        num_attention_heads=c.heads,
        intermediate_size=c.mlp_width,
        image_size=c.image_size,
        patch_size=c.patch_size,
        hidden_act=c.act,
        layer_norm_eps=c.layer_norm_eps,
    )


def randomise_constants(module: Any, seed: int, scale: float = 0.1) -> None:
    """Norm weights/biases and zero biases get seeded noise, blend factors N(0, 1): default init
    leaves them constant, and a parity check should not be able to miss them."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            if name.endswith("mix_factor"):
                param.copy_(noise)
            elif param.ndim == 1:
                param.add_(scale * noise.to(param.dtype))


def build_diffusers_networks(cfg: ModelConfig, seed: int) -> Dict[str, Any]:
    """unet, vae, image_encoder: seeded random diffusers / transformers modules in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(**diffusers_unet_config(cfg))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLTemporalDecoder(**diffusers_vae_config(cfg))
    torch.manual_seed(seed + 2)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**diffusers_clip_config(cfg)))
    nets = {"unet": unet, "vae": vae, "image_encoder": clip}
    for offset, module in enumerate(nets.values()):
        randomise_constants(module, seed + 10 + offset)
        module.eval()
    return nets


def align_diffusers_eps(unet: Any, eps: float) -> None:
    """diffusers uses GroupNorm eps 1e-6 in some U-Net res blocks where sgm (and svdeploy) use
    ``resblock_eps``; eps is not stored in config.json, so it is set after loading. Speed is
    unaffected; parity then measures the port, not diffusers' choice of eps."""
    import torch

    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.GroupNorm) and (
            "spatial_res_block" in name or "temporal_res_block" in name
        ):
            module.eps = eps


def load_diffusers_networks(folder: Path, cfg: ModelConfig) -> Dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionModelWithProjection

    unet = UNetSpatioTemporalConditionModel.from_pretrained(folder / "unet").eval()
    align_diffusers_eps(unet, cfg.unet.resblock_eps)
    vae = AutoencoderKLTemporalDecoder.from_pretrained(folder / "vae").eval()
    clip = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder").eval()
    return {"unet": unet, "vae": vae, "image_encoder": clip}


# ---------------------------------------------------------------------------------------------
# The work directory
# ---------------------------------------------------------------------------------------------
@dataclass
class PreparedWeights:
    checkpoint_dir: Path  # svdeploy checkpoint (config.yaml + weights.safetensors)
    diffusers_dir: Optional[Path]  # the same weights as a diffusers folder, or None
    source: str  # "diffusers random init" | "svdeploy random_weights"
    diffusers_unavailable: str  # why there is no diffusers peer ("" when there is)
    reused: bool

    def to_json(self) -> Dict[str, Any]:
        return {
            "checkpoint_dir": str(self.checkpoint_dir),
            "diffusers_dir": None if self.diffusers_dir is None else str(self.diffusers_dir),
            "source": self.source,
            "diffusers_unavailable": self.diffusers_unavailable,
            "reused": self.reused,
        }


def _canonical_order(cfg: ModelConfig) -> ModelConfig:
    """attention_resolutions in the order svd-convert derives from a diffusers config
    (descending). svd-convert compares the tuples in order, so mid.yaml's [1, 2] is refused
    against the same network read back from diffusers as (2, 1); the set is what matters."""
    from svdeploy.config import replace

    ordered = tuple(sorted(cfg.unet.attention_resolutions, reverse=True))
    return replace(cfg, unet=replace(cfg.unet, attention_resolutions=ordered))


def config_digest(cfg: ModelConfig, seed: int, use_diffusers: bool) -> str:
    text = json.dumps(
        {"config": to_dict(cfg), "seed": seed, "diffusers": use_diffusers}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_weights(
    cfg: ModelConfig, work: Path, seed: int = 0, use_diffusers: bool = True, progress: bool = False
) -> PreparedWeights:
    """Write (or reuse) the benchmark weights under ``work``."""
    from svdeploy.models.convert import convert_checkpoint

    available, reason = (
        torch_stack_status() if use_diffusers else (False, "disabled by --no-diffusers")
    )
    digest = config_digest(cfg, seed, available)
    work.mkdir(parents=True, exist_ok=True)
    stamp_path = work / STAMP
    checkpoint = work / CHECKPOINT_DIR
    folder = work / DIFFUSERS_DIR
    if stamp_path.is_file():
        stamp = json.loads(stamp_path.read_text())
        if stamp.get("digest") == digest and checkpoint.is_dir():
            return PreparedWeights(
                checkpoint, folder if available else None, stamp["source"], reason, reused=True
            )
    for stale in (checkpoint, folder, stamp_path):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    if available:
        nets = build_diffusers_networks(cfg, seed)
        tmp = make_temp_dir(folder)
        for name, module in nets.items():
            module.save_pretrained(tmp / name, safe_serialization=True)
        replace_dir(tmp, folder)
        del nets
        convert_checkpoint(folder, checkpoint, config=_canonical_order(cfg), progress=progress)
        source = "diffusers random init → convert_checkpoint"
    else:
        from svdeploy.models.loading import CONFIG_FILE, WEIGHTS_FILE
        from svdeploy.models.random_weights import write_random_sgm_file

        tmp_file = work / ".random.safetensors"
        write_random_sgm_file(cfg, tmp_file, seed)
        convert_checkpoint(tmp_file, checkpoint, config=cfg, progress=progress)
        tmp_file.unlink()
        assert (checkpoint / CONFIG_FILE).is_file() and (checkpoint / WEIGHTS_FILE).is_file()
        source = "svdeploy random_weights → convert_checkpoint"
    atomic_write_json(stamp_path, {"digest": digest, "source": source, "seed": seed})
    return PreparedWeights(checkpoint, folder if available else None, source, reason, reused=False)


__all__ = [
    "PreparedWeights",
    "prepare_weights",
    "diffusers_unet_config",
    "diffusers_vae_config",
    "diffusers_clip_config",
    "build_diffusers_networks",
    "load_diffusers_networks",
    "align_diffusers_eps",
    "torch_stack_status",
    "save_model_config",
]
