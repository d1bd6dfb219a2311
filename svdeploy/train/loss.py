"""EDM training loss of SVD's v-prediction U-Net, and the per-video random draws.

The U-Net sees exactly what it sees at inference (docs/NUMERICS.md §6):
``[noisy·c_in, image_latent]`` on channels, ``c_noise = 0.25·ln σ``, the CLIP embedding as a
one-token context and the embedded time ids ``[fps − 1, motion_bucket_id, cond_aug]``, both
repeated per frame. Then

    denoised = c_skip·noisy + c_out·unet_out          (sgm VScalingWithEDMcNoise)
    loss     = mean(w·(denoised − x0)²),  w = (σ²+1)/σ²   (sgm EDMWeighting, sigma_data = 1)

with c_in = 1/√(σ²+1), c_skip = 1/(σ²+1), c_out = −σ/√(σ²+1) and one σ per video, shared by its
frames. Conditioning dropout multiplies a video's image latent and CLIP embedding by ``keep``
(0 or 1) together, which is what classifier-free guidance feeds as the unconditional half.

Every random number is drawn in NumPy by :func:`draw_video`, from a generator seeded with
``(seed, sample index)``, so a resumed run, a different gradient-accumulation split or another
data-parallel layout draws the same numbers for the same video.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from svdeploy.models.embedders import embed_time_ids

from .config import DiffusionConfig


# ---------------------------------------------------------------------------------------------
# Draws (NumPy)
# ---------------------------------------------------------------------------------------------
@dataclass
class VideoDraws:
    """The random numbers of one training video, in the order they are drawn."""

    cond_aug: float  # noise augmentation strength of the conditioning frame
    image_noise: np.ndarray  # (3, H, W) standard normal, scaled by cond_aug
    sigma: float  # EDM noise level
    noise: np.ndarray  # (F, C, h, w) standard normal
    keep: float  # 1.0, or 0.0 when the conditioning is dropped


def draw_video(
    seed: int,
    sample_index: int,
    diffusion: DiffusionConfig,
    image_shape: Tuple[int, int, int],
    latent_shape: Tuple[int, int, int, int],
) -> VideoDraws:
    """Draw, in this order: cond_aug (log-normal, or the fixed value), the image noise, ln σ ~
    N(p_mean, p_std²), the latent noise, the dropout coin. The image noise and the coin are drawn
    even when unused, so the stream of numbers does not depend on the options."""
    rng = np.random.default_rng([int(seed), int(sample_index)])
    log_aug = diffusion.cond_aug_mean + diffusion.cond_aug_std * rng.standard_normal()
    cond_aug = float(np.exp(log_aug)) if diffusion.cond_aug is None else float(diffusion.cond_aug)
    image_noise = rng.standard_normal(image_shape, dtype=np.float32)
    sigma = float(np.exp(diffusion.p_mean + diffusion.p_std * rng.standard_normal()))
    noise = rng.standard_normal(latent_shape, dtype=np.float32)
    keep = 0.0 if rng.random() < diffusion.conditioning_dropout else 1.0
    return VideoDraws(
        cond_aug=cond_aug, image_noise=image_noise, sigma=sigma, noise=noise, keep=keep
    )


def time_ids(fps: float, motion_bucket_id: int, cond_aug: float) -> np.ndarray:
    """SVD's added time ids [fps − 1, motion_bucket_id, cond_aug] (float32, shape (3,))."""
    return np.array([fps - 1.0, float(motion_bucket_id), cond_aug], np.float32)


# ---------------------------------------------------------------------------------------------
# Loss cell (MindSpore)
# ---------------------------------------------------------------------------------------------
class EDMLoss(nn.Cell):
    """Scalar EDM loss of a batch of B videos of F frames through ``unet``.

    construct(x0 (B·F, C, h, w) scaled latents, image_latent (B, C, h, w) unscaled,
              context (B, 1, D) CLIP embeddings, time_ids (B, 3), sigma (B,),
              noise (B·F, C, h, w), keep (B,)) → loss ()
    Frames are frame-major inside each video (index b·F + f), as in the U-Net.
    """

    def __init__(self, unet: nn.Cell, num_frames: int, dim_per_time_id: int) -> None:
        super().__init__()
        self.unet = unet
        self.num_frames = num_frames
        self.dim_per_time_id = dim_per_time_id

    def construct(
        self,
        x0: Tensor,
        image_latent: Tensor,
        context: Tensor,
        time_ids: Tensor,
        sigma: Tensor,
        noise: Tensor,
        keep: Tensor,
    ) -> Tensor:
        f = self.num_frames
        b = sigma.shape[0]
        n, c, h, w = x0.shape
        s = ops.broadcast_to(sigma.reshape(b, 1), (b, f)).reshape(n, 1, 1, 1)  # one σ per video
        noisy = x0 + s * noise
        s2p1 = s * s + 1.0
        c_in = ops.rsqrt(s2p1)
        c_skip = 1.0 / s2p1
        c_out = -s * c_in
        c_noise = 0.25 * ops.log(s.reshape(n))
        # conditioning dropout: image latent and CLIP embedding zeroed together
        image_latent = image_latent * keep.reshape(b, 1, 1, 1)
        context = context * keep.reshape(b, 1, 1)
        image_frames = ops.broadcast_to(
            image_latent.reshape(b, 1, c, h, w), (b, f, c, h, w)
        ).reshape(n, c, h, w)
        d = context.shape[2]
        context_frames = ops.broadcast_to(context.reshape(b, 1, 1, d), (b, f, 1, d)).reshape(
            n, 1, d
        )
        ids = ops.broadcast_to(time_ids.reshape(b, 1, 3), (b, f, 3)).reshape(n, 3)
        y = embed_time_ids(ids, self.dim_per_time_id)
        out = self.unet(ops.concat((noisy * c_in, image_frames), 1), c_noise, context_frames, y, f)
        denoised = c_skip * noisy + c_out * out.astype(ms.float32)
        weight = s2p1 / (s * s)
        return ops.mean(weight * ops.square(denoised - x0))
