"""The runtime's sampling loop against diffusers' StableVideoDiffusionPipeline.

The graphs are the tiny diffusers pipeline's own torch networks behind the artifact's graph
contract (tests/svdref/torch_backend.py); both sides get the same image_noise and
latents. Any difference comes from the runtime's NumPy glue: preprocessing, schedule,
batching, guidance, Euler steps, chunked decoding and clipping.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from svdeploy.runtime import VideoPipeline
from svdref.diffusers_tiny import build_tiny_pipeline, make_image, run_with_noise
from svdref.torch_backend import fake_manifest, torch_graphs

torch.set_num_threads(2)
SIZE = 32  # image 32×32 → latents 16×16 (VAE factor 2)
TOLERANCE = 1e-4  # on frames in [0, 1]; one uint8 level is 3.9e-3

CASES = {
    # name: (frames, decode chunk, steps, our cfg export, sampling kwargs)
    "cfg_tail_chunk": (5, 2, 3, True, dict(min_guidance_scale=1.0, max_guidance_scale=3.0)),
    "cfg_other_conditioning": (
        5,
        3,
        4,
        True,
        dict(
            min_guidance_scale=1.5,
            max_guidance_scale=2.5,
            fps=10,
            motion_bucket_id=60,
            noise_aug_strength=0.1,
        ),
    ),
    "cfg_single_chunk": (4, 4, 2, True, dict(min_guidance_scale=1.0, max_guidance_scale=3.0)),
    "no_cfg": (5, 2, 3, False, dict(min_guidance_scale=1.0, max_guidance_scale=1.0)),
    # a CFG export asked for no guidance must give diffusers' guidance-free result
    "cfg_export_scale_one": (5, 2, 2, True, dict(min_guidance_scale=1.0, max_guidance_scale=1.0)),
    "one_step": (3, 2, 1, True, dict(min_guidance_scale=1.0, max_guidance_scale=3.0)),
}


@pytest.fixture(scope="module")
def diffusers_pipe():
    return build_tiny_pipeline(0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_frames_equal_diffusers_pipeline(diffusers_pipe, case):
    frames, chunk, steps, cfg, kwargs = CASES[case]
    image = make_image(SIZE, SIZE)
    rng = np.random.default_rng(2024)
    image_noise = rng.standard_normal((1, 3, SIZE, SIZE), dtype=np.float32)
    latents = rng.standard_normal((1, frames, 4, SIZE // 2, SIZE // 2), dtype=np.float32)
    call = dict(dict(fps=7, motion_bucket_id=127, noise_aug_strength=0.02), **kwargs)

    theirs = run_with_noise(
        diffusers_pipe,
        Image.fromarray(image),
        image_noise,
        latents,
        height=SIZE,
        width=SIZE,
        num_frames=frames,
        num_inference_steps=steps,
        decode_chunk_size=chunk,
        **call,
    )[0]

    manifest = fake_manifest(diffusers_pipe, SIZE, SIZE, frames, chunk, cfg=cfg)
    pipe = VideoPipeline(manifest, torch_graphs(diffusers_pipe), backend="torch")
    result = pipe.generate(
        image,
        num_inference_steps=steps,
        image_noise=image_noise,
        latents=latents,
        progress=False,
        **call,
    )

    assert result.frames.shape == theirs.shape == (frames, SIZE, SIZE, 3)
    diff = float(np.abs(result.frames - theirs).max())
    print(f"{case}: max |runtime - diffusers| = {diff:.2e}")
    assert diff < TOLERANCE
    # the comparison means something: the frames are far from constant and differ per frame
    assert float(result.frames.std()) > 0.01
    assert float(np.abs(result.frames[0] - result.frames[-1]).max()) > 1e-3
    assert result.timings["graphs"]["unet"]["calls"] == steps
    assert result.seed is None  # both draws were given


def test_guidance_and_chunking_change_the_result(diffusers_pipe):
    """Guards against a parity test passing because a setting is ignored on both sides."""
    image = make_image(SIZE, SIZE)
    rng = np.random.default_rng(5)
    noise = dict(
        image_noise=rng.standard_normal((1, 3, SIZE, SIZE), dtype=np.float32),
        latents=rng.standard_normal((1, 5, 4, SIZE // 2, SIZE // 2), dtype=np.float32),
    )

    def run(chunk: int, max_scale: float) -> np.ndarray:
        pipe = VideoPipeline(
            fake_manifest(diffusers_pipe, SIZE, SIZE, 5, chunk), torch_graphs(diffusers_pipe)
        )
        return pipe.generate(
            image, num_inference_steps=2, max_guidance_scale=max_scale, progress=False, **noise
        ).frames

    base = run(2, 3.0)
    assert np.abs(base - run(5, 3.0)).max() > 1e-4  # the temporal decoder mixes within a chunk
    assert np.abs(base - run(2, 1.5)).max() > 1e-4
