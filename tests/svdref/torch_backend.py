"""A test-only graph backend: the four graphs of the artifact contract computed by a
diffusers pipeline's torch networks, plus a manifest describing them.

With it the runtime's sampling loop can be checked against diffusers' own pipeline before
any exporter exists: ``VideoPipeline(fake_manifest(...), torch_graphs(pipe))``.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from svdeploy.manifest import GraphEntry, Manifest, TensorSpec

GraphFn = Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]


def torch_graphs(pipe) -> Dict[str, GraphFn]:
    """Graph callables (inputs and outputs by contract name) over ``pipe``'s networks."""
    import torch  # here, so the manifest helpers below work without torch

    def run(fn: Callable[..., "torch.Tensor"]) -> Callable[..., np.ndarray]:
        def call(inputs: Dict[str, np.ndarray]) -> np.ndarray:
            with torch.no_grad():
                tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
                return fn(**tensors).numpy().astype(np.float32)

        return call

    encode_image = run(lambda pixel_values: pipe.image_encoder(pixel_values).image_embeds[:, None])
    encode_vae = run(lambda image: pipe.vae.encode(image).latent_dist.mode())

    def unet_fn(
        sample: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor, time_ids: torch.Tensor
    ) -> torch.Tensor:
        batch = context.shape[0]
        frames = sample.shape[0] // batch
        # the graph's flat batch-major rows (b·F + f) are diffusers' (B, F, ...) layout
        v = pipe.unet(
            sample.reshape(batch, frames, *sample.shape[1:]),
            c_noise[0],
            encoder_hidden_states=context,
            added_time_ids=time_ids,
            return_dict=False,
        )[0]
        return v.reshape(batch * frames, *v.shape[2:])

    unet = run(unet_fn)
    decode = run(lambda z: pipe.vae.decode(z, num_frames=z.shape[0]).sample)
    return {
        "image_encoder": lambda x: {"image_embeds": encode_image(x)},
        "vae_encoder": lambda x: {"latent": encode_vae(x)},
        "unet": lambda x: {"v": unet(x)},
        "vae_decoder": lambda x: {"frames": decode(x)},
        "vae_decoder_tail": lambda x: {"frames": decode(x)},
    }


def _spec(name: str, *shape: int) -> TensorSpec:
    return TensorSpec(name=name, shape=tuple(shape), dtype="float32")


def contract_graph_entries(
    height: int,
    width: int,
    num_frames: int,
    latent_channels: int,
    latent_height: int,
    latent_width: int,
    context_dim: int,
    guidance_batch: int,
    decode_chunk_size: int,
    fmt: str = "onnx",
) -> list:
    """GraphEntry list exactly as ARCHITECTURE.md's graph contract describes the graphs
    (files are named but need not exist when the graphs are injected)."""
    F, C, h, w, B, K = (
        num_frames,
        latent_channels,
        latent_height,
        latent_width,
        guidance_batch,
        decode_chunk_size,
    )
    ext = "onnx" if fmt == "onnx" else "mindir"
    rows = [
        (
            "image_encoder",
            [_spec("pixel_values", 1, 3, 224, 224)],
            [_spec("image_embeds", 1, 1, context_dim)],
        ),
        ("vae_encoder", [_spec("image", 1, 3, height, width)], [_spec("latent", 1, C, h, w)]),
        (
            "unet",
            [
                _spec("sample", B * F, 2 * C, h, w),
                _spec("c_noise", 1),
                _spec("context", B, 1, context_dim),
                _spec("time_ids", B, 3),
            ],
            [_spec("v", B * F, C, h, w)],
        ),
        ("vae_decoder", [_spec("z", K, C, h, w)], [_spec("frames", K, 3, height, width)]),
    ]
    if F % K:
        rows.append(
            (
                "vae_decoder_tail",
                [_spec("z", F % K, C, h, w)],
                [_spec("frames", F % K, 3, height, width)],
            )
        )
    return [
        GraphEntry(
            name=name,
            format=fmt,
            file=f"{name}.{ext}",
            inputs=inputs,
            outputs=outputs,
            sha256="0" * 64,
        )
        for name, inputs, outputs in rows
    ]


def fake_manifest(
    pipe,
    height: int,
    width: int,
    num_frames: int,
    decode_chunk_size: int,
    cfg: bool = True,
    defaults: Optional[dict] = None,
    variant: str = "tiny-diffusers",
) -> Manifest:
    """A manifest for ``torch_graphs(pipe)`` at the given video size."""
    factor = pipe.vae_scale_factor
    channels = pipe.vae.config.latent_channels
    context_dim = pipe.image_encoder.config.projection_dim
    batch = 2 if cfg else 1
    graphs = contract_graph_entries(
        height,
        width,
        num_frames,
        channels,
        height // factor,
        width // factor,
        context_dim,
        batch,
        decode_chunk_size,
    )
    return Manifest(
        variant=variant,
        height=height,
        width=width,
        num_frames=num_frames,
        latent_shape=(num_frames, channels, height // factor, width // factor),
        cfg=cfg,
        guidance_batch=batch,
        decode_chunk_size=decode_chunk_size,
        scheduler={
            "sigma_min": 0.002,
            "sigma_max": 700.0,
            "rho": 7.0,
            "scaling_factor": float(pipe.vae.config.scaling_factor),
        },
        defaults=dict(defaults or {}),
        graphs=graphs,
    )
