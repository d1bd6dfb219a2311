"""Thin export cells: each one's ``construct`` arguments are exactly its graph's inputs
(docs/ARCHITECTURE.md, "Graph contract"), so MindSpore names the graph inputs after them."""

from __future__ import annotations

from mindspore import Tensor, nn, ops

from svdeploy.models.clip import ImageEncoder
from svdeploy.models.embedders import embed_time_ids
from svdeploy.models.unet import VideoUNet
from svdeploy.models.vae import VAEEncoder, VideoDecoder


class ImageEncoderGraph(nn.Cell):
    """pixel_values (1, 3, 224, 224) → image_embeds (1, 1, D)."""

    def __init__(self, net: ImageEncoder) -> None:
        super().__init__()
        self.net = net

    def construct(self, pixel_values: Tensor) -> Tensor:
        emb = self.net(pixel_values)
        return emb.reshape(emb.shape[0], 1, emb.shape[1])


class VAEEncoderGraph(nn.Cell):
    """image (1, 3, H, W) in [−1, 1] (noise-augmented) → latent (1, C, h, w), unscaled mean."""

    def __init__(self, net: VAEEncoder) -> None:
        super().__init__()
        self.net = net

    def construct(self, image: Tensor) -> Tensor:
        return self.net(image)


class UNetGraph(nn.Cell):
    """One denoising call for the whole guided batch.

    sample (B·F, 2C, h, w), c_noise (1,), context (B, 1, D), time_ids (B, 3) → v (B·F, C, h, w).
    The conditioning embedders and the per-frame repetition of context and time ids are inside
    the graph, so the runtime only feeds what changes per step.
    """

    def __init__(self, net: VideoUNet, num_frames: int) -> None:
        super().__init__()
        self.net = net
        self.num_frames = num_frames
        self.dim_per_id = net.cfg.addition_time_embed_dim

    def construct(
        self, sample: Tensor, c_noise: Tensor, context: Tensor, time_ids: Tensor
    ) -> Tensor:
        n = sample.shape[0]
        b = context.shape[0]
        f = self.num_frames
        timesteps = ops.broadcast_to(c_noise.reshape(1), (n,))
        # (B, L, D) → (B, F, L, D) → (B·F, L, D): every frame of video b sees its context
        frame_context = ops.broadcast_to(
            context.reshape(b, 1, context.shape[1], context.shape[2]),
            (b, f, context.shape[1], context.shape[2]),
        )
        frame_context = frame_context.reshape(n, context.shape[1], context.shape[2])
        y = embed_time_ids(time_ids, self.dim_per_id)  # (B, 3·d)
        y = ops.broadcast_to(y.reshape(b, 1, y.shape[1]), (b, f, y.shape[1])).reshape(n, -1)
        return self.net(sample, timesteps, frame_context, y, f)


class VAEDecoderGraph(nn.Cell):
    """z (K, C, h, w) = latents / scaling_factor → frames (K, 3, H, W), one chunk of K frames."""

    def __init__(self, net: VideoDecoder, num_frames: int) -> None:
        super().__init__()
        self.net = net
        self.num_frames = num_frames

    def construct(self, z: Tensor) -> Tensor:
        return self.net(z, self.num_frames)
