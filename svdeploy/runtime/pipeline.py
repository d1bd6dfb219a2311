"""``VideoPipeline``: image → video over the four exported graphs (docs/NUMERICS.md).

Everything between the graph calls is NumPy here: preprocessing, the two random draws,
the Karras schedule, guidance, Euler steps, chunked decoding and clipping. The graphs come
either from an artifact directory (``VideoPipeline.load``) or, for tests and embedding,
from any callables injected with a manifest (``VideoPipeline(manifest, graphs)``).
"""

from __future__ import annotations

import math
import os
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
from tqdm import tqdm

from svdeploy.config import SamplingConfig
from svdeploy.contract import graph_specs
from svdeploy.errors import BackendError, InputError, ManifestError
from svdeploy.manifest import Manifest

from .backends import CheckedGraph, GraphFn, load_artifact, required_graph_names
from .decode import Window, decode_blended, decode_windows
from .draws import check_clips, noise_array, resolve_seed
from .guidance import apply_guidance, guidance_scales, split_guidance_batch
from .preprocess import (
    CLIP_SIZE,
    ImageSource,
    PreparedImage,
    clip_pixel_values,
    prepare_image,
    vae_encoder_input,
)
from .schedule import edm_preconditioning, euler_step, initial_noise_scale, karras_sigmas
from .video import frames_to_uint8

# on_step(done, total): called after each denoising step; raising from it stops the run.
StepCallback = Callable[[int, int], None]

SAMPLING_KEYS = (
    "fps",
    "motion_bucket_id",
    "noise_aug_strength",
    "min_guidance_scale",
    "max_guidance_scale",
    "num_inference_steps",
)
# Upper bounds far beyond any useful value; they keep a typo from overflowing a container
# field (mp4 time base) or the float32 latents only after minutes of sampling.
MAX_FPS = 120
MAX_GUIDANCE_SCALE = 100.0
MAX_NOISE_AUG_STRENGTH = 100.0


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplingParams:
    """The resolved parameters of one run (caller's values, else the artifact's defaults)."""

    fps: int
    motion_bucket_id: int
    noise_aug_strength: float
    min_guidance_scale: float
    max_guidance_scale: float
    num_inference_steps: int
    guidance: bool  # True when the U-Net runs [uncond, cond] and scales apply


def _integer(name: str, value: Any, low: int, high: Optional[int], source: str) -> int:
    integral = isinstance(value, (int, np.integer)) or (
        isinstance(value, (float, np.floating))
        and math.isfinite(value)
        and float(value).is_integer()
    )
    expected = f"an integer in {low}..{high}" if high is not None else f"an integer ≥ {low}"
    if (
        isinstance(value, bool)
        or not integral
        or value < low
        or (high is not None and value > high)
    ):
        raise InputError(f"{name} = {value!r}{source}: expected {expected}")
    return int(value)


def _number(name: str, value: Any, low: float, source: str, high: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
        or value < low
        or value > high
    ):
        raise InputError(f"{name} = {value!r}{source}: expected a finite number in {low}..{high}")
    return float(value)


def resolve_sampling_params(manifest: Manifest, **given: Any) -> SamplingParams:
    """Fill the caller's ``None`` values from ``manifest.defaults`` (then from svdeploy's
    SamplingConfig), check every value, and settle guidance for the artifact's batching."""
    unknown = sorted(set(given) - set(SAMPLING_KEYS))
    if unknown:
        raise InputError(
            f"unknown sampling parameter(s) {', '.join(unknown)}; expected "
            f"{', '.join(SAMPLING_KEYS)}"
        )
    values, sources = _sampling_values(manifest, given)
    fps = _integer("fps", values["fps"], 1, MAX_FPS, sources["fps"])
    motion = _integer(
        "motion_bucket_id", values["motion_bucket_id"], 0, 255, sources["motion_bucket_id"]
    )
    steps = _integer(
        "num_inference_steps",
        values["num_inference_steps"],
        1,
        None,
        sources["num_inference_steps"],
    )
    aug = _number(
        "noise_aug_strength",
        values["noise_aug_strength"],
        0.0,
        sources["noise_aug_strength"],
        MAX_NOISE_AUG_STRENGTH,
    )
    g_min, g_max = _guidance_scales(manifest, values, sources)
    return SamplingParams(
        fps=fps,
        motion_bucket_id=motion,
        noise_aug_strength=aug,
        min_guidance_scale=g_min,
        max_guidance_scale=g_max,
        num_inference_steps=steps,
        guidance=manifest.guidance_batch == 2,
    )


def _sampling_values(
    manifest: Manifest, given: Mapping[str, Any]
) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Each parameter's value and where it came from (a suffix for the error messages, empty
    for the caller's own), so that a refused value names the default that supplied it."""
    fallback = SamplingConfig()
    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    for key in SAMPLING_KEYS:
        if given.get(key) is not None:
            values[key], sources[key] = given[key], ""
        elif key in manifest.defaults and manifest.defaults[key] is not None:
            values[key], sources[key] = manifest.defaults[key], " (the artifact's default)"
        else:
            values[key], sources[key] = getattr(fallback, key), " (svdeploy's default)"
    return values, sources


def _guidance_scales(
    manifest: Manifest, values: Mapping[str, Any], sources: Mapping[str, str]
) -> Tuple[float, float]:
    """(min, max) guidance scale, checked; 1.0 and 1.0 for an artifact without guidance, whose
    U-Net has no unconditional half to honour other scales with."""
    g_min = _number(
        "min_guidance_scale",
        values["min_guidance_scale"],
        0.0,
        sources["min_guidance_scale"],
        MAX_GUIDANCE_SCALE,
    )
    g_max = _number(
        "max_guidance_scale",
        values["max_guidance_scale"],
        0.0,
        sources["max_guidance_scale"],
        MAX_GUIDANCE_SCALE,
    )
    if g_min > g_max:
        raise InputError(
            f"min_guidance_scale = {g_min} is above max_guidance_scale = {g_max}: "
            "expected min ≤ max"
        )
    if manifest.guidance_batch != 2:
        # The U-Net graph has no unconditional half, so scales other than 1 cannot be honoured.
        for key, value in (("min_guidance_scale", g_min), ("max_guidance_scale", g_max)):
            if sources[key] == "" and value != 1.0:
                raise InputError(
                    f"{key} = {value}: this artifact was exported without classifier-free guidance "
                    "(guidance_batch 1), so the guidance scales must be 1.0; re-export with cfg "
                    "to use guidance"
                )
        g_min = g_max = 1.0  # defaults of a CFG preset do not apply here
    return g_min, g_max


# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------
@dataclass
class GenerationResult:
    frames: np.ndarray  # (F, H, W, 3) float32 in [0, 1], before rounding
    params: SamplingParams
    seed: Optional[int]  # None when both noise arrays were given
    backend: str
    timings: Dict[str, Any]
    image: Dict[str, Any] = field(default_factory=dict)  # input size and crop box
    precision: str = "fp32"  # the backend's compute precision (fp32, bf16, fp16)
    details: Dict[str, Any] = field(default_factory=dict)  # decode windows, chaining, ...

    @property
    def frames_uint8(self) -> np.ndarray:
        return frames_to_uint8(self.frames)

    def metadata(self) -> Dict[str, Any]:
        """JSON-ready description of the run (parameters, seed, backend, precision, timings)."""
        return {
            "parameters": asdict(self.params),
            "seed": self.seed,
            "backend": self.backend,
            "precision": self.precision,
            "image_info": self.image,
            "timings": self.timings,
            "frames": list(self.frames.shape),
            **self.details,
        }


# ---------------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------------
class VideoPipeline:
    """Stable Video Diffusion image-to-video over exported static-shape graphs.

    ``graphs`` maps each graph name of the artifact contract (image_encoder, vae_encoder,
    unet, vae_decoder, and vae_decoder_tail when frames % decode_chunk_size ≠ 0) to a
    callable taking a dict of input arrays and returning its outputs (dict, list or array).
    Each is wrapped so every call is checked against the manifest entry of ``graph_format``
    (default: the manifest's only format, or its first one).
    """

    def __init__(
        self,
        manifest: Manifest,
        graphs: Mapping[str, Union[GraphFn, CheckedGraph]],
        *,
        backend: str = "injected",
        graph_format: Optional[str] = None,
        artifact_dir: Optional[Union[str, Path]] = None,
        load_seconds: float = 0.0,
        precision: str = "fp32",
    ) -> None:
        manifest.validate()
        self.manifest = manifest
        self.backend = backend
        self.precision = precision
        self.artifact_dir = Path(artifact_dir) if artifact_dir is not None else None
        self.load_seconds = load_seconds
        fmt = graph_format or manifest.formats()[0]
        self.graphs: Dict[str, CheckedGraph] = {}
        for name in required_graph_names(manifest):
            if name not in graphs:
                raise ManifestError(
                    f"no callable given for graph {name!r}; expected "
                    f"{', '.join(required_graph_names(manifest))}"
                )
            graph = graphs[name]
            self.graphs[name] = (
                graph
                if isinstance(graph, CheckedGraph)
                else CheckedGraph(manifest.graph(name, fmt), graph, backend=backend)
            )
        self._check_contract()

    @classmethod
    def load(
        cls,
        artifact_dir: Union[str, os.PathLike],
        backend: Optional[str] = None,
        verify_hashes: bool = True,
        precision: Optional[str] = None,
        lite_python: Optional[str] = None,
    ) -> "VideoPipeline":
        """Open an artifact: manifest checks, backend and precision choice (``fp32``, ``bf16``
        or ``auto``; see ``backends.resolve_precision``), sha256 verification, graph load.
        ``lite_python``: interpreter with mindspore_lite for the lite backend (see lite.py)."""
        loaded = load_artifact(
            artifact_dir,
            backend=backend,
            verify_hashes=verify_hashes,
            precision=precision,
            lite_python=lite_python,
        )
        return cls(
            loaded.manifest,
            loaded.graphs,
            backend=loaded.backend,
            artifact_dir=loaded.directory,
            load_seconds=loaded.load_seconds,
            precision=loaded.precision,
        )

    # -- shapes ------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return self.manifest.num_frames

    @property
    def image_shape(self) -> Tuple[int, int, int, int]:
        return (1, 3, self.manifest.height, self.manifest.width)

    @property
    def latent_shape(self) -> Tuple[int, ...]:
        return (1, *self.manifest.latent_shape)

    def _check_contract(self) -> None:
        """Refuse a manifest whose graph specs disagree with its own sizes (ARCHITECTURE.md)."""
        m = self.manifest
        frames, channels, lat_h, lat_w = m.latent_shape
        batch, chunk = m.guidance_batch, m.decode_chunk_size
        embed = self.graphs["image_encoder"].entry.outputs
        context_dim = embed[0].shape[-1] if embed else -1
        expected = graph_specs(
            height=m.height,
            width=m.width,
            num_frames=frames,
            latent_channels=channels,
            latent_height=lat_h,
            latent_width=lat_w,
            context_dim=context_dim,
            clip_size=CLIP_SIZE,
            guidance_batch=batch,
            decode_chunk_size=chunk,
        )
        for name, (inputs, outputs) in expected.items():
            entry = self.graphs[name].entry
            got_inputs = {s.name: tuple(s.shape) for s in entry.inputs}
            got_outputs = {s.name: tuple(s.shape) for s in entry.outputs}
            if got_inputs != inputs or got_outputs != outputs:
                raise ManifestError(
                    f"manifest graph {name!r} declares inputs {got_inputs} and outputs "
                    f"{got_outputs}; for {frames} frames of {m.height}×{m.width}, latents "
                    f"{channels}×{lat_h}×{lat_w}, guidance batch {batch} and decode chunk {chunk} "
                    f"the contract expects inputs {inputs} and outputs {outputs}"
                )
            bad = [s for s in list(entry.inputs) + list(entry.outputs) if s.dtype != "float32"]
            if bad:
                raise ManifestError(
                    f"manifest graph {name!r}: tensor {bad[0].name!r} is "
                    f"{bad[0].dtype}; graph inputs and outputs must be float32"
                )

    # -- running -----------------------------------------------------------------------------
    def __call__(
        self,
        image: ImageSource,
        fps: Optional[int] = None,
        motion_bucket_id: Optional[int] = None,
        noise_aug_strength: Optional[float] = None,
        min_guidance_scale: Optional[float] = None,
        max_guidance_scale: Optional[float] = None,
        num_inference_steps: Optional[int] = None,
        seed: Optional[int] = None,
        image_noise: Optional[np.ndarray] = None,
        latents: Optional[np.ndarray] = None,
        progress: bool = True,
        clips: int = 1,
        decode_overlap: int = 0,
        on_step: Optional[StepCallback] = None,
    ) -> Union[np.ndarray, List[np.ndarray]]:
        """Generate a video; returns uint8 frames (F, H, W, 3), or (clips·(F−1)+1, H, W, 3)
        with ``clips``. See ``generate``. A list or tuple of images is a batch: image i runs
        with seed ``seed + i`` and a list of videos comes back (``svdeploy.runtime.batch``)."""
        options: Dict[str, Any] = dict(
            fps=fps,
            motion_bucket_id=motion_bucket_id,
            noise_aug_strength=noise_aug_strength,
            min_guidance_scale=min_guidance_scale,
            max_guidance_scale=max_guidance_scale,
            num_inference_steps=num_inference_steps,
            image_noise=image_noise,
            latents=latents,
            progress=progress,
            clips=clips,
            decode_overlap=decode_overlap,
            on_step=on_step,
        )
        if isinstance(image, (list, tuple)):
            from .batch import generate_batch

            return [r.frames_uint8 for r in generate_batch(self, image, seed=seed, **options)]
        return self.generate(image, seed=seed, **options).frames_uint8

    def generate(
        self,
        image: ImageSource,
        fps: Optional[int] = None,
        motion_bucket_id: Optional[int] = None,
        noise_aug_strength: Optional[float] = None,
        min_guidance_scale: Optional[float] = None,
        max_guidance_scale: Optional[float] = None,
        num_inference_steps: Optional[int] = None,
        seed: Optional[int] = None,
        image_noise: Optional[np.ndarray] = None,
        latents: Optional[np.ndarray] = None,
        progress: bool = True,
        clips: int = 1,
        decode_overlap: int = 0,
        on_step: Optional[StepCallback] = None,
    ) -> GenerationResult:
        """Generate a video and return float frames in [0, 1] with parameters and timings.

        Parameters left ``None`` come from the artifact's defaults. Random draws follow
        docs/NUMERICS.md §2.3: ``numpy.random.default_rng(seed)`` gives ``image_noise``
        (1, 3, H, W) first, then ``latents`` (1, F, C, h, w), both standard normal. A given
        array replaces its draw; the draws still happen in order, so giving only
        ``image_noise`` keeps the seed's latents. ``image`` is a path, a PIL image or an
        (H, W[, C]) array.

        Guidance: an artifact exported with CFG always runs [uncond, cond] and applies
        ``v_u + g_f·(v_c − v_u)`` (sgm's LinearPredictionGuider), for any scales; when every
        g_f is 1 the conditional prediction is used as is, which equals diffusers' run without
        CFG. (diffusers also drops guidance whenever max_guidance_scale ≤ 1; we do not, so
        scales below 1 keep their meaning.) An artifact without CFG accepts only scales of
        1.0 from the caller and ignores guidance defaults.

        ``clips`` > 1 chains clips, each conditioned on the previous one's last frame
        (``svdeploy.runtime.chain``). ``decode_overlap`` decodes with chunks overlapping by
        that many frames, blended linearly (``svdeploy.runtime.decode``).

        ``on_step(done, total)`` is called after each denoising step (done = 1..total, over
        all clips of a chain), for progress reports; an exception it raises stops the run
        there (how a server cancels).
        """
        sampling = dict(
            fps=fps,
            motion_bucket_id=motion_bucket_id,
            noise_aug_strength=noise_aug_strength,
            min_guidance_scale=min_guidance_scale,
            max_guidance_scale=max_guidance_scale,
            num_inference_steps=num_inference_steps,
        )
        return self._generate(
            image, sampling, seed, image_noise, latents, progress, clips, decode_overlap, on_step
        )

    def _generate(
        self,
        image: ImageSource,
        sampling: Dict[str, Any],
        seed: Optional[int],
        image_noise: Optional[np.ndarray],
        latents: Optional[np.ndarray],
        progress: bool,
        clips: int,
        decode_overlap: int,
        on_step: Optional[StepCallback],
    ) -> GenerationResult:
        """``generate`` past its documented signature: a chain of clips is ``generate_chain``'s
        (one prepared image, latents handed over between clips), a single clip is ours."""
        if check_clips(clips) != 1:
            from .chain import generate_chain

            return generate_chain(
                self,
                image,
                clips=clips,
                seed=seed,
                image_noise=image_noise,
                latents=latents,
                decode_overlap=decode_overlap,
                progress=progress,
                on_step=on_step,
                **sampling,
            )
        return self._generate_clip(
            image, sampling, seed, image_noise, latents, progress, decode_overlap, on_step
        )

    def _generate_clip(
        self,
        image: ImageSource,
        sampling: Dict[str, Any],
        seed: Optional[int],
        image_noise: Optional[np.ndarray],
        latents: Optional[np.ndarray],
        progress: bool,
        decode_overlap: int,
        on_step: Optional[StepCallback],
    ) -> GenerationResult:
        """One clip, reporting its share of the graphs' counters (they are the pipeline's,
        shared by every run)."""
        start = time.perf_counter()
        windows = self.decode_windows(self.num_frames, decode_overlap)
        params = resolve_sampling_params(self.manifest, **sampling)
        used_seed, noise_for_image, noise_for_latents = self._noise_draws(
            seed, image_noise, latents
        )
        calls_before = self.graph_counters()
        timings: Dict[str, Any] = {}
        prepared, decoded = self._run_stages(
            image,
            noise_for_image,
            noise_for_latents[0],
            params,
            windows,
            decode_overlap,
            progress,
            on_step,
            timings,
        )
        timings["graphs"] = self.graph_calls_since(calls_before)
        timings["end_to_end_s"] = time.perf_counter() - start
        return GenerationResult(
            frames=decoded_to_frames(decoded),
            params=params,
            seed=used_seed,
            backend=self.backend,
            timings=timings,
            image=prepared_image_info(prepared),
            precision=self.precision,
            details={"decode_overlap": decode_overlap, "decode_calls": len(windows)},
        )

    def _run_stages(
        self,
        image: ImageSource,
        image_noise: np.ndarray,
        noise: np.ndarray,
        params: SamplingParams,
        windows: List[Window],
        decode_overlap: int,
        progress: bool,
        on_step: Optional[StepCallback],
        timings: Dict[str, Any],
    ) -> Tuple[PreparedImage, np.ndarray]:
        """The timed stages of one clip, the seconds of each into ``timings``: preprocessing,
        then encoding, denoising and decoding under one progress bar of steps + decode calls.
        Returns (the prepared image, the decoded frames)."""
        t0 = time.perf_counter()
        prepared = prepare_image(image, self.manifest.height, self.manifest.width)
        timings["preprocess_s"] = time.perf_counter() - t0
        pixels = prepared.pixels

        steps = params.num_inference_steps
        with tqdm(
            total=steps + len(windows),
            desc="denoise",
            unit="call",
            file=sys.stderr,
            disable=not progress,
            dynamic_ncols=True,
        ) as bar:
            t0 = time.perf_counter()
            context, image_latent = self._encode(pixels, image_noise, params)
            timings["encode_s"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            final, per_step = self._denoise(noise, context, image_latent, params, bar, on_step)
            timings["denoise_s"] = time.perf_counter() - t0
            timings["per_step_s"] = per_step

            t0 = time.perf_counter()
            bar.set_description("decode")
            decoded = self.decode_latents(final, windows, decode_overlap, bar.update)
            timings["decode_s"] = time.perf_counter() - t0
        return prepared, decoded

    def _noise_draws(
        self, seed: Optional[int], image_noise: Optional[np.ndarray], latents: Optional[np.ndarray]
    ) -> Tuple[Optional[int], np.ndarray, np.ndarray]:
        """(seed used, image noise, latents): the seed's two draws in order, each replaced by
        the array given for it; no seed (None) when both arrays are given."""
        given_image_noise = (
            None
            if image_noise is None
            else noise_array("image_noise", image_noise, self.image_shape)
        )
        given_latents = (
            None if latents is None else noise_array("latents", latents, self.latent_shape)
        )
        if given_image_noise is not None and given_latents is not None:
            return None, given_image_noise, given_latents
        used_seed = resolve_seed(seed)
        rng = np.random.default_rng(used_seed)
        drawn_image_noise = rng.standard_normal(self.image_shape, dtype=np.float32)
        drawn_latents = rng.standard_normal(self.latent_shape, dtype=np.float32)
        return (
            used_seed,
            drawn_image_noise if given_image_noise is None else given_image_noise,
            drawn_latents if given_latents is None else given_latents,
        )

    def graph_counters(self) -> Dict[str, Tuple[int, float]]:
        """(calls, seconds) of every graph so far, to report one run's share."""
        return {n: (g.calls, g.seconds) for n, g in self.graphs.items()}

    def graph_calls_since(self, before: Dict[str, Tuple[int, float]]) -> Dict[str, Dict[str, Any]]:
        return {
            n: {"calls": g.calls - before[n][0], "seconds": g.seconds - before[n][1]}
            for n, g in self.graphs.items()
        }

    # -- stages ------------------------------------------------------------------------------
    def _encode(
        self, pixels: np.ndarray, image_noise: np.ndarray, params: SamplingParams
    ) -> Tuple[np.ndarray, np.ndarray]:
        """CLIP embedding → U-Net context (B, 1, D); VAE latent of the noised image (1, C, h, w)."""
        embeds = self.graphs["image_encoder"](pixel_values=clip_pixel_values(pixels))[
            "image_embeds"
        ]
        latent = self.graphs["vae_encoder"](
            image=vae_encoder_input(pixels, image_noise, params.noise_aug_strength)
        )["latent"]
        for name, value in (("image_encoder", embeds), ("vae_encoder", latent)):
            if not np.all(np.isfinite(value)):
                raise BackendError(f"graph {name!r} returned NaN or Inf; stopping before sampling")
        if self.manifest.guidance_batch == 2:
            # [uncond, cond]: the unconditional half sees a zero embedding and a zero latent.
            context = np.concatenate([np.zeros_like(embeds), embeds])
        else:
            context = embeds
        return np.ascontiguousarray(context, dtype=np.float32), latent

    def _unet_image_channels(self, image_latent: np.ndarray) -> np.ndarray:
        """The constant second half of the U-Net input channels, (B·F, C, h, w)."""
        frames = self.num_frames
        cond = np.repeat(image_latent, frames, axis=0)
        if self.manifest.guidance_batch == 2:
            return np.concatenate([np.zeros_like(cond), cond])
        return cond

    def _denoise(
        self,
        noise: np.ndarray,
        context: np.ndarray,
        image_latent: np.ndarray,
        params: SamplingParams,
        bar: tqdm,
        on_step: Optional[StepCallback] = None,
    ) -> Tuple[np.ndarray, List[float]]:
        unet = self.graphs["unet"]
        batch, frames = self.manifest.guidance_batch, self.num_frames
        sched = self.manifest.scheduler
        sigmas = karras_sigmas(
            params.num_inference_steps, sched["sigma_min"], sched["sigma_max"], sched["rho"]
        )
        scales = guidance_scales(params.min_guidance_scale, params.max_guidance_scale, frames)
        time_ids = np.repeat(
            np.array(
                [[params.fps - 1, params.motion_bucket_id, params.noise_aug_strength]], np.float32
            ),
            batch,
            axis=0,
        )
        image_channels = self._unet_image_channels(image_latent)
        latents = (noise * np.float32(initial_noise_scale(sigmas))).astype(np.float32)
        per_step: List[float] = []
        steps = params.num_inference_steps
        for i in range(steps):
            t0 = time.perf_counter()
            sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
            pre = edm_preconditioning(sigma)
            scaled = (latents * np.float32(pre.c_in)).astype(np.float32)
            noisy = np.concatenate([scaled] * batch) if batch > 1 else scaled
            sample = np.concatenate([noisy, image_channels], axis=1)
            v = unet(
                sample=sample,
                c_noise=np.array([pre.c_noise], np.float32),
                context=context,
                time_ids=time_ids,
            )["v"]
            if batch == 2:
                v_uncond, v_cond = split_guidance_batch(v, batch, frames)
                v = apply_guidance(v_uncond, v_cond, scales)
            latents = euler_step(latents, v, sigma, sigma_next)
            if not np.all(np.isfinite(latents)):
                raise BackendError(
                    "the latents hold NaN or Inf after step "
                    f"{i + 1} of {steps} (sigma {sigma:.6g}); "
                    "the unet graph returned invalid values, so the run stops here"
                )
            per_step.append(time.perf_counter() - t0)
            bar.update(1)
            if on_step is not None:
                on_step(i + 1, steps)
        return latents, per_step

    def decode_windows(self, total: int, overlap: int = 0) -> List[Window]:
        """The decoder calls for ``total`` latent frames (see ``svdeploy.runtime.decode``)."""
        frames, chunk = self.num_frames, self.manifest.decode_chunk_size
        return decode_windows(total, chunk, overlap, tail=frames % chunk or None)

    def decode_latents(
        self,
        latents: np.ndarray,
        windows: List[Window],
        overlap: int = 0,
        on_window: Callable[[], Any] = lambda: None,
    ) -> np.ndarray:
        """Denoised latents (T, C, h, w) → decoded frames (T, 3, H, W), unclipped."""
        inverse_scale = np.float32(1.0 / self.manifest.scheduler["scaling_factor"])
        z = (latents * inverse_scale).astype(np.float32)

        def decode(graph: str, chunk: np.ndarray) -> np.ndarray:
            return self.graphs[graph](z=chunk)["frames"]

        return decode_blended(z, windows, overlap, decode, on_window)


def prepared_image_info(prepared: PreparedImage) -> Dict[str, Any]:
    """The input image's size and crop box, for the sidecar."""
    return {
        "source_height": prepared.source_size[0],
        "source_width": prepared.source_size[1],
        "crop_box": list(prepared.crop_box) if prepared.crop_box else None,
    }


def decoded_to_frames(decoded: np.ndarray) -> np.ndarray:
    """Decoder output (T, 3, H, W) ≈[−1, 1] → frames (T, H, W, 3) float32 in [0, 1]."""
    frames = np.clip(decoded * np.float32(0.5) + np.float32(0.5), 0.0, 1.0)
    return np.ascontiguousarray(frames.transpose(0, 2, 3, 1), dtype=np.float32)


_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"
_NOISE_KEYS = ("image_noise", "latents")


def _npz_member_header(
    archive: "zipfile.ZipFile", key: str, where: str
) -> Tuple[Tuple[int, ...], np.dtype]:
    """Shape and dtype of one .npz member, read from its .npy header without loading it."""
    with archive.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    return tuple(shape), dtype


def _check_noise_headers(path: Path, expected: Dict[str, Tuple[int, ...]]) -> None:
    """Refuse wrong shapes, dtypes and members from the headers, before any data is read
    (a small compressed file can declare gigabytes)."""
    where = f"noise file {str(path)!r}"
    with zipfile.ZipFile(path) as archive:
        names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
        missing = [k for k in _NOISE_KEYS if k not in names]
        if missing:
            raise InputError(
                f"{where} lacks array(s) {', '.join(missing)}; it holds "
                f"{', '.join(names) or 'nothing'}; expected image_noise "
                f"{expected['image_noise']} and latents {expected['latents']}"
            )
        for key in _NOISE_KEYS:
            shape, dtype = _npz_member_header(archive, key, where)
            if shape != expected[key]:
                raise InputError(f"{where}: {key} has shape {shape}: expected {expected[key]}")
            if dtype.kind != "f" or dtype.itemsize > 8:
                raise InputError(
                    f"{where}: {key} has dtype {dtype}: expected float32 standard-normal values"
                )


def load_noise_file(
    path: Union[str, os.PathLike], image_shape: Tuple[int, ...], latent_shape: Tuple[int, ...]
) -> Tuple[np.ndarray, np.ndarray]:
    """Read ``image_noise`` and ``latents`` from an .npz file and check their shapes (from
    the headers first, so memory is bounded by the expected sizes)."""
    path = Path(path)
    expected = {"image_noise": tuple(image_shape), "latents": tuple(latent_shape)}
    wanted = "expected an .npz file with arrays image_noise and latents"
    if not path.exists():
        raise InputError(f"noise file {str(path)!r} does not exist; {wanted}")
    if not path.is_file():
        raise InputError(f"noise file {str(path)!r} is not a regular file (a folder?); {wanted}")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic.startswith(_NPY_MAGIC):
        raise InputError(
            f"noise file {str(path)!r} is not a readable .npz file: it is a single "
            f".npy array; {wanted} (save them with numpy.savez)"
        )
    if not magic.startswith(_ZIP_MAGIC):
        raise InputError(
            f"noise file {str(path)!r} is not a readable .npz file: it is not a zip "
            f"archive; {wanted}"
        )
    try:
        _check_noise_headers(path, expected)
        with np.load(path, allow_pickle=False) as data:
            image_noise, latents = data["image_noise"], data["latents"]
    except InputError:
        raise
    except Exception as exc:  # damaged zip or header, pickled objects
        raise InputError(f"noise file {str(path)!r} is not a readable .npz file ({exc})") from None
    where = f"noise file {str(path)!r}: "
    return (
        noise_array(where + "image_noise", image_noise, image_shape),
        noise_array(where + "latents", latents, latent_shape),
    )
