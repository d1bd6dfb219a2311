"""Test-only builder of a tiny, randomly initialised diffusers StableVideoDiffusionPipeline.

Shared by parity tests: the networks are small enough for a CPU in seconds but keep SVD's
structure (temporal U-Net with cross-attention, temporal VAE decoder with mid attention,
a CLIP vision tower at 224). Weights are seeded; the parameters that default init leaves
constant (norm weights/biases, zero biases, blend factors) are randomised so a wrong
mapping cannot hide. Needs torch, diffusers and transformers (the `test` extra).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from svdeploy.benchmarks.weights import randomise_constants

# stabilityai/stable-video-diffusion-img2vid(-xt) scheduler_config.json
SVD_SCHEDULER_CONFIG: Dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    trained_betas=None,
    prediction_type="v_prediction",
    interpolation_type="linear",
    use_karras_sigmas=True,
    sigma_min=0.002,
    sigma_max=700.0,
    timestep_spacing="leading",
    timestep_type="continuous",
    steps_offset=1,
)

# Channels stay multiples of 32 (GroupNorm 32 groups is fixed in the SVD blocks).
TINY_UNET: Dict[str, Any] = dict(
    sample_size=16,
    in_channels=8,
    out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    block_out_channels=(32, 64),
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=24,  # 3 conditioning scalars × 8
    layers_per_block=1,
    cross_attention_dim=32,
    transformer_layers_per_block=1,
    num_attention_heads=(2, 4),
    num_frames=4,
)

# Two res blocks per level: with one, diffusers' temporal decoder silently skips its mid
# attention, which the real model has.
TINY_VAE: Dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=2,
    latent_channels=4,
    sample_size=64,
    scaling_factor=0.18215,
    force_upcast=True,
)

# The pipeline resizes PIL input to 224 for CLIP, so image_size must be 224. Exact GELU as in
# OpenCLIP ViT-H/14 (transformers' default would be quick_gelu).
TINY_CLIP: Dict[str, Any] = dict(
    hidden_size=32,
    projection_dim=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    image_size=224,
    patch_size=32,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
)


# Norm affines, biases and blend factors get seeded noise (shared with svd-bench's weights).
randomise_constant_parameters = randomise_constants


def _own_storage(module: torch.nn.Module) -> None:
    # transformers may hand out parameters that are views into unaligned buffers, which makes
    # CPU GEMM rounding run-dependent (~1e-5); fresh copies make runs bitwise repeatable.
    with torch.no_grad():
        for param in module.parameters():
            param.data = param.data.clone()


def build_tiny_pipeline(
    seed: int = 0,
    unet_cfg: Optional[Dict[str, Any]] = None,
    vae_cfg: Optional[Dict[str, Any]] = None,
    clip_cfg: Optional[Dict[str, Any]] = None,
    perturb: bool = True,
) -> StableVideoDiffusionPipeline:
    """A tiny SVD pipeline on CPU in eval mode, with the SVD scheduler, progress bar off."""
    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(**(unet_cfg or TINY_UNET))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLTemporalDecoder(**(vae_cfg or TINY_VAE))
    torch.manual_seed(seed + 2)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**(clip_cfg or TINY_CLIP)))
    for offset, module in enumerate((unet, vae, image_encoder)):
        if perturb:
            randomise_constant_parameters(module, seed + 10 + offset)
        _own_storage(module)
        module.eval()
    # The pipeline calls the processor with resize, crop and rescale off: only the CLIP mean/std
    # normalisation matters, so its size fields are irrelevant.
    feature_extractor = CLIPImageProcessor(crop_size=32, size=32)
    pipe = StableVideoDiffusionPipeline(
        unet=unet,
        vae=vae,
        image_encoder=image_encoder,
        scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG),
        feature_extractor=feature_extractor,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_image(h: int = 64, w: int = 64) -> np.ndarray:
    """A deterministic RGB test picture (uint8 H×W×3): colour ramps, a wave, a square, a disc
    and a diagonal bar, so resizing and colour errors are visible."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[..., 0] = xx / max(w - 1, 1)
    img[..., 1] = yy / max(h - 1, 1)
    img[..., 2] = 0.5 + 0.5 * np.sin(xx / w * 2 * np.pi) * np.cos(yy / h * 2 * np.pi)
    img[h // 8 : h // 8 + h // 4, w // 8 : w // 8 + w // 4] = (1.0, 1.0, 0.0)
    img[(yy - 0.65 * h) ** 2 + (xx - 0.6 * w) ** 2 < (0.18 * min(h, w)) ** 2] = (0.1, 0.2, 0.9)
    img[np.abs((xx - yy) - 0.1 * w) < 0.04 * w] = (1.0, 1.0, 1.0)
    return (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def run_with_noise(
    pipe: StableVideoDiffusionPipeline,
    image: Any,
    image_noise: np.ndarray,
    latents: np.ndarray,
    **call_kwargs: Any,
) -> np.ndarray:
    """Run diffusers' own pipeline with the noise-augmentation draw and the initial latents
    taken from the given arrays (its one internal ``randn_tensor`` call is redirected).
    Returns the float frames (B, F, H, W, 3) in [0, 1]."""
    import diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion as svd_module

    pending = [torch.from_numpy(np.ascontiguousarray(image_noise, dtype=np.float32))]
    original = svd_module.randn_tensor

    def replay(shape, generator=None, device=None, dtype=None, layout=None):
        if not pending:
            raise AssertionError(f"unexpected extra random draw of shape {tuple(shape)}")
        tensor = pending.pop(0)
        if tuple(tensor.shape) != tuple(shape):
            raise AssertionError(f"draw of shape {tuple(shape)}, replay has {tuple(tensor.shape)}")
        return tensor.to(device=device, dtype=dtype)

    svd_module.randn_tensor = replay
    try:
        with torch.no_grad():
            frames = pipe(
                image,
                latents=torch.from_numpy(np.ascontiguousarray(latents, np.float32)),
                output_type="np",
                **call_kwargs,
            ).frames
    finally:
        svd_module.randn_tensor = original
    if pending:
        raise AssertionError("diffusers did not draw the image noise")
    return np.asarray(frames, dtype=np.float32)


# A second tiny model: 3 levels, 2 res blocks per level, attention at two levels; used with
# non-square images (e.g. 48x80 -> 12x20 latents) and an odd frame count.
TINY3_UNET: Dict[str, Any] = dict(
    TINY_UNET,
    down_block_types=(
        "CrossAttnDownBlockSpatioTemporal",
        "CrossAttnDownBlockSpatioTemporal",
        "DownBlockSpatioTemporal",
    ),
    up_block_types=(
        "UpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
    ),
    block_out_channels=(32, 64, 96),
    num_attention_heads=(2, 4, 6),
    layers_per_block=2,
    num_frames=5,
)
TINY3_VAE: Dict[str, Any] = dict(
    TINY_VAE,
    down_block_types=("DownEncoderBlock2D",) * 3,
    block_out_channels=(32, 64, 64),
)
TINY3_CLIP: Dict[str, Any] = dict(TINY_CLIP, patch_size=16, num_hidden_layers=3)


def set_unet_resnet_eps(unet: torch.nn.Module, eps: float = 1e-5) -> None:
    """diffusers uses GroupNorm eps 1e-6 in some U-Net res blocks where sgm uses 1e-5."""
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.GroupNorm) and (
            "spatial_res_block" in name or "temporal_res_block" in name
        ):
            module.eps = eps


def build_components(
    seed: int = 0,
    unet_cfg: Optional[Dict[str, Any]] = None,
    vae_cfg: Optional[Dict[str, Any]] = None,
    clip_cfg: Optional[Dict[str, Any]] = None,
    perturb: bool = True,
    sgm_eps: bool = False,
) -> Dict[str, Any]:
    """The pipeline's components as a dict; ``sgm_eps`` sets the U-Net res-block GroupNorm
    eps to sgm's 1e-5."""
    pipe = build_tiny_pipeline(seed, unet_cfg, vae_cfg, clip_cfg, perturb)
    if sgm_eps:
        set_unet_resnet_eps(pipe.unet)
    return dict(
        unet=pipe.unet,
        vae=pipe.vae,
        image_encoder=pipe.image_encoder,
        scheduler=pipe.scheduler,
        feature_extractor=pipe.feature_extractor,
    )
