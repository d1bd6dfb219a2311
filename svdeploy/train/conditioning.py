"""The frozen half of training: VAE encoder and CLIP image encoder, run once per clip.

For a micro-batch of B clips of F frames (in [−1, 1]) and each clip's draws:

* x0 = VAE mean of every frame × scale_factor (the U-Net's target latents);
* image latent = VAE mean of (cond_image + cond_aug · image_noise), NOT scaled (DESIGN.md §4);
* context = CLIP embedding of the clean cond image, preprocessed exactly as at inference
  (:func:`svdeploy.runtime.preprocess.clip_pixel_values`: antialiased resize to 224, CLIP
  normalisation), as a one-token context (B, 1, D).

The frames and the B augmented cond images go through the VAE as one batch, so the encoder
graph compiles once. Neither network is trained: their parameters have ``requires_grad`` off
and they run in inference mode, outside the gradient graph.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from mindspore import Tensor, nn

from svdeploy.runtime.preprocess import clip_pixel_values

from .data import Sample
from .loss import VideoDraws, time_ids
from .step import MicroBatch


def freeze(cell: nn.Cell) -> nn.Cell:
    cell.set_train(False)
    for param in cell.get_parameters():
        param.requires_grad = False
    return cell


class FrozenConditioner:
    """Runs the frozen encoders and assembles :class:`~svdeploy.train.step.MicroBatch`."""

    def __init__(self, vae_encoder: nn.Cell, image_encoder: nn.Cell, scale_factor: float) -> None:
        self.vae_encoder = freeze(vae_encoder)
        self.image_encoder = freeze(image_encoder)
        self.scale_factor = float(scale_factor)

    def encode(self, frames: np.ndarray, cond_images: np.ndarray,
               draws: Sequence[VideoDraws]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """frames (B, F, 3, H, W), cond_images (B, 3, H, W), both in [−1, 1] →
        (x0 (B·F, C, h, w), image_latent (B, C, h, w), context (B, 1, D))."""
        b, f = frames.shape[:2]
        aug = np.array([d.cond_aug for d in draws], np.float32).reshape(b, 1, 1, 1)
        image_noise = np.stack([d.image_noise for d in draws]).astype(np.float32)
        augmented = cond_images.astype(np.float32) + aug * image_noise
        vae_in = np.concatenate([frames.reshape((b * f,) + frames.shape[2:]), augmented])
        latents = self.vae_encoder(Tensor(np.ascontiguousarray(vae_in, np.float32))).asnumpy()
        x0 = latents[: b * f] * np.float32(self.scale_factor)
        image_latent = latents[b * f:]
        pixels = clip_pixel_values((cond_images.astype(np.float64) + 1.0) / 2.0)
        context = self.image_encoder(Tensor(pixels)).asnumpy()[:, None, :]
        return x0.astype(np.float32), image_latent.astype(np.float32), context.astype(np.float32)

    def micro_batch(self, samples: Sequence[Sample], draws: Sequence[VideoDraws]) -> MicroBatch:
        frames = np.stack([s.frames for s in samples])
        cond = np.stack([s.cond_image for s in samples])
        x0, image_latent, context = self.encode(frames, cond, draws)
        ids = np.stack([time_ids(s.clip_fps, s.motion_bucket_id, d.cond_aug)
                        for s, d in zip(samples, draws)])
        noise = np.concatenate([d.noise for d in draws]).astype(np.float32)
        return MicroBatch(x0=x0, image_latent=image_latent, context=context, time_ids=ids,
                          sigma=np.array([d.sigma for d in draws], np.float32), noise=noise,
                          keep=np.array([d.keep for d in draws], np.float32))
