"""Chained clips: a video longer than the exported frame count, clip after clip.

Clip 0 is the ordinary run from the input image. Clip k ≥ 1 is conditioned on the last frame
of clip k − 1, handed over in latent space: the U-Net's image-latent channels (which take the
VAE encoder's *unscaled* posterior mean) get clip k − 1's final denoised latent of its last
frame divided by the scaling factor (denoised latents live in the scaled space, z·s), so no
decode → encode round trip happens and no pixel rounding or noise augmentation enters the
hand-over. ``time_ids`` keep the run's noise_aug_strength, as the model was trained with it.

The CLIP branch of every clip gets the embedding of the *original input image*: it anchors
the content (objects, colours) so that later clips do not drift, and it needs no decode
inside the loop. (The decoded last frame would follow the video but let errors accumulate.)

Frames: clip k ≥ 1 starts with (almost) the frame it was conditioned on, so its first frame
is dropped and the video has clips·(F − 1) + 1 frames. All latents are decoded together at
the end with the chunk windows of ``svdeploy.runtime.decode``, so a clip seam is decoded
like any other pair of frames (with ``decode_overlap`` it is blended like one).

Seeds: clip 0 draws from ``numpy.random.default_rng(seed)`` exactly as a single run (so clip 0
equals ``generate(image, seed=seed)``'s latents); clip k ≥ 1 draws from
``numpy.random.default_rng([seed, k])`` (a SeedSequence of the pair, independent of the
streams of seeds seed + i used for batches), in the usual order: image_noise (unused, drawn
to keep the order), then latents. ``image_noise`` / ``latents`` given by the caller replace
clip 0's draws only.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from .decode import Window
from .draws import check_clips, noise_array, resolve_seed
from .pipeline import (
    GenerationResult,
    StepCallback,
    VideoPipeline,
    decoded_to_frames,
    prepared_image_info,
    resolve_sampling_params,
)
from .preprocess import ImageSource, PreparedImage, prepare_image

CLIP_EMBEDDING = "the original input image's (every clip)"


def chained_frame_count(clips: int, frames: int) -> int:
    return clips * (frames - 1) + 1


def clip_rng(seed: int, clip: int) -> np.random.Generator:
    """The random stream of clip ``clip`` of a chain started with ``seed`` (module doc)."""
    return np.random.default_rng(seed if clip == 0 else [seed, clip])


def clip_draws(pipe: VideoPipeline, seed: int, clip: int) -> Tuple[np.ndarray, np.ndarray]:
    rng = clip_rng(seed, clip)
    image_noise = rng.standard_normal(pipe.image_shape, dtype=np.float32)
    return image_noise, rng.standard_normal(pipe.latent_shape, dtype=np.float32)


def handover_latent(final_latents: np.ndarray, scaling_factor: float) -> np.ndarray:
    """Clip k's denoised latents (F, C, h, w), scaled → the next clip's image latent
    (1, C, h, w) in the VAE encoder's unscaled space."""
    return np.ascontiguousarray(final_latents[-1:] / np.float32(scaling_factor), dtype=np.float32)


def join_clips(finals: List[np.ndarray]) -> np.ndarray:
    """Concatenate the clips' latents, dropping each later clip's first frame (the shared one)."""
    return np.concatenate([finals[0]] + [f[1:] for f in finals[1:]], axis=0)


def generate_chain(
    pipe: VideoPipeline,
    image: ImageSource,
    *,
    clips: int,
    seed: Optional[int] = None,
    image_noise: Optional[np.ndarray] = None,
    latents: Optional[np.ndarray] = None,
    decode_overlap: int = 0,
    progress: bool = True,
    on_step: Optional[StepCallback] = None,
    **sampling: Any,
) -> GenerationResult:
    """``clips`` chained clips from ``image`` as one GenerationResult (module doc).
    ``on_step(done, total)`` counts the denoising steps of all clips together."""
    start = time.perf_counter()
    clips = check_clips(clips)
    params = resolve_sampling_params(pipe.manifest, **sampling)
    used_seed, first_noise, first_latents = _first_clip_draws(pipe, seed, image_noise, latents)
    windows = pipe.decode_windows(chained_frame_count(clips, pipe.num_frames), decode_overlap)
    calls_before = pipe.graph_counters()
    timings: Dict[str, Any] = {}
    prepared, decoded = _run_chain_stages(
        pipe,
        image,
        clips,
        used_seed,
        first_noise,
        first_latents,
        params,
        windows,
        decode_overlap,
        progress,
        on_step,
        timings,
    )
    timings["graphs"] = pipe.graph_calls_since(calls_before)
    timings["end_to_end_s"] = time.perf_counter() - start
    return GenerationResult(
        frames=decoded_to_frames(decoded),
        params=params,
        seed=used_seed,
        backend=pipe.backend,
        timings=timings,
        image=prepared_image_info(prepared),
        precision=pipe.precision,
        details=_chain_details(pipe, clips, decode_overlap, len(windows)),
    )


def _run_chain_stages(
    pipe: VideoPipeline,
    image: ImageSource,
    clips: int,
    seed: int,
    first_noise: np.ndarray,
    first_latents: np.ndarray,
    params: Any,
    windows: List[Window],
    decode_overlap: int,
    progress: bool,
    on_step: Optional[StepCallback],
    timings: Dict[str, Any],
) -> Tuple[PreparedImage, np.ndarray]:
    """The timed stages as a single clip runs them, the seconds of each into ``timings``, with
    the denoising repeated per clip under one progress bar; returns (prepared image, decoded)."""
    t0 = time.perf_counter()
    prepared = prepare_image(image, pipe.manifest.height, pipe.manifest.width)
    timings["preprocess_s"] = time.perf_counter() - t0
    with tqdm(
        total=clips * params.num_inference_steps + len(windows),
        desc="clip 1 denoise",
        unit="call",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        t0 = time.perf_counter()
        context, image_latent = pipe._encode(prepared.pixels, first_noise, params)
        timings["encode_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        finals, timings["per_step_s"] = _denoise_clips(
            pipe, clips, seed, first_latents, context, image_latent, params, bar, on_step
        )
        timings["denoise_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        bar.set_description("decode")
        decoded = pipe.decode_latents(join_clips(finals), windows, decode_overlap, bar.update)
        timings["decode_s"] = time.perf_counter() - t0
    return prepared, decoded


def _chain_details(
    pipe: VideoPipeline, clips: int, decode_overlap: int, decode_calls: int
) -> Dict[str, Any]:
    """How the chain was made, for the sidecar: a reader can redo the draws and the handover."""
    return {
        "clips": clips,
        "frames_per_clip": pipe.num_frames,
        "decode_overlap": decode_overlap,
        "decode_calls": decode_calls,
        "handover": "latent (last denoised latent / scaling_factor → image-latent channels)",
        "clip_embedding": CLIP_EMBEDDING,
        "clip_seeds": "clip 0: default_rng(seed); clip k: default_rng([seed, k])",
    }


def _first_clip_draws(
    pipe: VideoPipeline,
    seed: Optional[int],
    image_noise: Optional[np.ndarray],
    latents: Optional[np.ndarray],
) -> Tuple[int, np.ndarray, np.ndarray]:
    """Clip 0's draws as a single run makes them; given arrays replace them (clip 0 only)."""
    used_seed = resolve_seed(seed)
    first_noise, first_latents = clip_draws(pipe, used_seed, 0)
    if image_noise is not None:
        first_noise = noise_array("image_noise", image_noise, pipe.image_shape)
    if latents is not None:
        first_latents = noise_array("latents", latents, pipe.latent_shape)
    return used_seed, first_noise, first_latents


def _denoise_clips(
    pipe: VideoPipeline,
    clips: int,
    seed: int,
    first_latents: np.ndarray,
    context: np.ndarray,
    image_latent: np.ndarray,
    params: Any,
    bar: tqdm,
    on_step: Optional[StepCallback],
) -> Tuple[List[np.ndarray], List[float]]:
    """Denoise clip after clip, each conditioned on the previous one's last latent; returns
    the clips' final latents and the seconds of every step."""
    steps = params.num_inference_steps
    finals: List[np.ndarray] = []
    per_step: List[float] = []
    for k in range(clips):
        bar.set_description(f"clip {k + 1}/{clips} denoise")
        noise = first_latents if k == 0 else clip_draws(pipe, seed, k)[1]
        clip_step = (
            None
            if on_step is None
            else (lambda done, _total, k=k: on_step(k * steps + done, clips * steps))
        )
        final, seconds = pipe._denoise(noise[0], context, image_latent, params, bar, clip_step)
        finals.append(final)
        per_step.extend(seconds)
        image_latent = handover_latent(final, pipe.manifest.scheduler["scaling_factor"])
    return finals, per_step


__all__ = [
    "chained_frame_count",
    "clip_rng",
    "clip_draws",
    "handover_latent",
    "join_clips",
    "generate_chain",
]
