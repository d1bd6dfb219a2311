"""The frozen half of training: VAE encoder and CLIP image encoder, run once per clip.

For a micro-batch of B clips of F frames (in [−1, 1]) and each clip's draws:

* x0 = VAE mean of every frame × scale_factor (the U-Net's target latents);
* image latent = VAE mean of (cond_image + cond_aug · image_noise), NOT scaled
  (docs/NUMERICS.md §2.2);
* context = CLIP embedding of the clean cond image, preprocessed exactly as at inference
  (:func:`svdeploy.numerics.clip_pixel_values`: antialiased resize to 224, CLIP
  normalisation), as a one-token context (B, 1, D).

The frames go through the VAE one clip (F frames) at a time and the B augmented cond images
as one batch: two fixed shapes, so the encoder graph compiles twice and never again. A clip's x0
depends only on its pixels (the encoder is frozen and deterministic), so it is kept in a cache
keyed by a hash of the pixels, bounded in bytes: from the second epoch on the encoder runs only
on the cond images (on the demo model it was 0.75 s of a 2.2 s step). Neither network is trained:
their parameters have ``requires_grad`` off and they run in inference mode, outside the gradient
graph.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Sequence, Tuple

import numpy as np
from mindspore import Tensor, nn

from svdeploy.numerics import clip_pixel_values

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

    def __init__(
        self,
        vae_encoder: nn.Cell,
        image_encoder: nn.Cell,
        scale_factor: float,
        cache_bytes: int = 0,
    ) -> None:
        self.vae_encoder = freeze(vae_encoder)
        self.image_encoder = freeze(image_encoder)
        self.scale_factor = float(scale_factor)
        self.cache_bytes = int(cache_bytes)
        self._cache: "OrderedDict[bytes, np.ndarray]" = OrderedDict()  # least recently used first
        self._cached_bytes = 0
        self.hits = self.misses = 0

    def clip_latents(self, clip: np.ndarray) -> np.ndarray:
        """One clip's frames (F, 3, H, W) in [−1, 1] → their VAE means × scale_factor."""
        key = hashlib.blake2b(
            np.ascontiguousarray(clip, np.float32).tobytes(), digest_size=20
        ).digest()
        found = self._cache.get(key)
        if found is not None:
            self.hits += 1
            self._cache.move_to_end(key)
            return found
        self.misses += 1
        latents = self.vae_encoder(Tensor(np.ascontiguousarray(clip, np.float32))).asnumpy()
        latents = (latents * np.float32(self.scale_factor)).astype(np.float32)
        if latents.nbytes <= self.cache_bytes:
            self._cache[key] = latents
            self._cached_bytes += latents.nbytes
            while self._cached_bytes > self.cache_bytes:
                self._cached_bytes -= self._cache.popitem(last=False)[1].nbytes
        return latents

    def encode(
        self, frames: np.ndarray, cond_images: np.ndarray, draws: Sequence[VideoDraws]
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """frames (B, F, 3, H, W), cond_images (B, 3, H, W), both in [−1, 1] →
        (x0 (B·F, C, h, w), image_latent (B, C, h, w), context (B, 1, D))."""
        b = frames.shape[0]
        x0 = np.concatenate([self.clip_latents(clip) for clip in frames])
        aug = np.array([d.cond_aug for d in draws], np.float32).reshape(b, 1, 1, 1)
        image_noise = np.stack([d.image_noise for d in draws]).astype(np.float32)
        augmented = cond_images.astype(np.float32) + aug * image_noise
        image_latent = self.vae_encoder(Tensor(np.ascontiguousarray(augmented))).asnumpy()
        pixels = clip_pixel_values((cond_images.astype(np.float64) + 1.0) / 2.0)
        context = self.image_encoder(Tensor(pixels)).asnumpy()[:, None, :]
        return x0, image_latent.astype(np.float32), context.astype(np.float32)

    def micro_batch(self, samples: Sequence[Sample], draws: Sequence[VideoDraws]) -> MicroBatch:
        frames = np.stack([s.frames for s in samples])
        cond = np.stack([s.cond_image for s in samples])
        x0, image_latent, context = self.encode(frames, cond, draws)
        ids = np.stack(
            [time_ids(s.clip_fps, s.motion_bucket_id, d.cond_aug) for s, d in zip(samples, draws)]
        )
        noise = np.concatenate([d.noise for d in draws]).astype(np.float32)
        return MicroBatch(
            x0=x0,
            image_latent=image_latent,
            context=context,
            time_ids=ids,
            sigma=np.array([d.sigma for d in draws], np.float32),
            noise=noise,
            keep=np.array([d.keep for d in draws], np.float32),
        )
