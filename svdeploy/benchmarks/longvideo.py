"""Measurements of chained clips, overlapping decode and batches on any artifact.

``python -m svdeploy.benchmarks.longvideo overlap CHUNKED FULL [--seed S] [--steps N]``
    CHUNKED: an artifact with small decode chunks (e.g. ``--decode-chunk-size 2``); FULL: the
    same checkpoint exported with all frames in one chunk. One sampling run (CHUNKED's
    graphs), then its latents decoded three ways: all frames (FULL's decoder), chunks without
    overlap, chunks with overlap 1. Prints the mean absolute difference of each chunked decode
    from the all-frames one, and the flicker figure: mean |frame(t+1) − frame(t)| across chunk
    borders against inside chunks (frames in [0, 1]).
``python -m svdeploy.benchmarks.longvideo chain ARTIFACT --clips N [--motion-bucket-id M]``
    Chains N clips and tracks the object (centroid of the pixels far from the frame's median
    colour, for the moving-shapes demo model): velocity per clip and the step at each seam.
``python -m svdeploy.benchmarks.longvideo batch ARTIFACT [--repeats R]``
    Seconds per video of single runs against 2-image batches, interleaved in this process.

Each prints a JSON line; the tables in svdeploy/benchmarks/README.md come from these.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np


def _image() -> np.ndarray:
    """The repository's sample image (the demo model's moving shapes start from it)."""
    from svdeploy.demo import sample_image_path
    from svdeploy.runtime.preprocess import to_rgb_float

    return to_rgb_float(sample_image_path())


def measure_overlap(
    chunked: Path,
    full: Path,
    seed: int = 0,
    steps: Optional[int] = None,
    backend: Optional[str] = None,
) -> Dict[str, Any]:
    from svdeploy.runtime.chain import clip_draws
    from svdeploy.runtime.decode import border_flicker
    from svdeploy.runtime.pipeline import VideoPipeline, decoded_to_frames, resolve_sampling_params
    from svdeploy.runtime.preprocess import prepare_image

    pipe = VideoPipeline.load(chunked, backend=backend)
    reference = VideoPipeline.load(full, backend=pipe.backend)
    if reference.manifest.decode_chunk_size != reference.num_frames:
        raise SystemExit(
            f"{full}: decode chunk {reference.manifest.decode_chunk_size}; expected "
            f"all {reference.num_frames} frames in one chunk"
        )
    params = resolve_sampling_params(pipe.manifest, num_inference_steps=steps)
    noise, latents = clip_draws(pipe, seed, 0)
    prepared = prepare_image(_image(), pipe.manifest.height, pipe.manifest.width)
    context, image_latent = pipe._encode(prepared.pixels, noise, params)
    final, _ = pipe._denoise(latents[0], context, image_latent, params, _NoBar())
    frames = pipe.num_frames
    all_frames = decoded_to_frames(
        reference.decode_latents(final, reference.decode_windows(frames, 0))
    )
    plain_windows = pipe.decode_windows(frames, 0)
    result: Dict[str, Any] = {
        "chunked": str(chunked),
        "full": str(full),
        "backend": pipe.backend,
        "frames": frames,
        "chunk": pipe.manifest.decode_chunk_size,
        "all_frames_flicker": border_flicker(all_frames, plain_windows),
    }
    for overlap in (0, 1):
        t0 = time.perf_counter()
        windows = pipe.decode_windows(frames, overlap)
        video = decoded_to_frames(pipe.decode_latents(final, windows, overlap))
        result[f"overlap{overlap}"] = {
            "mean_abs_diff_vs_all_frames": float(np.abs(video - all_frames).mean()),
            "flicker": border_flicker(video, plain_windows),
            "decode_calls": len(windows),
            "decode_s": time.perf_counter() - t0,
        }
    return result


def object_track(frames: np.ndarray, threshold: float = 0.15) -> np.ndarray:
    """(T, 2) centroid (y, x) of the pixels farther than ``threshold`` from the frame's
    median colour; NaN where none is."""
    out = np.full((frames.shape[0], 2), np.nan)
    for t, frame in enumerate(frames):
        distance = np.abs(frame - np.median(frame.reshape(-1, 3), axis=0)).max(axis=-1)
        ys, xs = np.nonzero(distance > threshold)
        if ys.size:
            out[t] = ys.mean(), xs.mean()
    return out


def measure_chain(
    artifact: Path,
    clips: int,
    seed: int = 0,
    steps: Optional[int] = None,
    motion_bucket_id: Optional[int] = None,
    decode_overlap: int = 0,
    backend: Optional[str] = None,
) -> Dict[str, Any]:
    from svdeploy.runtime.pipeline import VideoPipeline

    pipe = VideoPipeline.load(artifact, backend=backend)
    result = pipe.generate(
        _image(),
        seed=seed,
        clips=clips,
        num_inference_steps=steps,
        motion_bucket_id=motion_bucket_id,
        decode_overlap=decode_overlap,
        progress=False,
    )
    track = object_track(result.frames)
    steps_yx = np.diff(track, axis=0)
    per_clip = pipe.num_frames - 1
    velocities = [
        np.nanmean(steps_yx[k * per_clip : (k + 1) * per_clip - 1], axis=0).tolist()
        for k in range(clips)
    ]
    seams = [steps_yx[k * per_clip - 1].tolist() for k in range(1, clips)]
    return {
        "artifact": str(artifact),
        "clips": clips,
        "frames": int(result.frames.shape[0]),
        "seed": seed,
        "motion_bucket_id": result.params.motion_bucket_id,
        "velocity_per_clip_yx": velocities,
        "seam_step_yx": seams,
        "steps_yx": steps_yx.tolist(),
    }


def measure_batch(
    artifact: Path, repeats: int = 3, steps: Optional[int] = None, backend: Optional[str] = None
) -> Dict[str, Any]:
    from svdeploy.runtime.batch import generate_batch
    from svdeploy.runtime.pipeline import VideoPipeline

    pipe = VideoPipeline.load(artifact, backend=backend)
    image = _image()
    images = [image, image[::-1].copy()]
    pipe.generate(image, seed=0, num_inference_steps=1, progress=False)  # warm-up
    single: List[float] = []
    batch: List[float] = []
    for r in range(repeats):  # interleaved, so both see the same machine load
        t0 = time.perf_counter()
        pipe.generate(image, seed=r, num_inference_steps=steps, progress=False)
        single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        generate_batch(pipe, images, seed=r, num_inference_steps=steps, progress=False)
        batch.append((time.perf_counter() - t0) / len(images))
    return {
        "artifact": str(artifact),
        "backend": pipe.backend,
        "repeats": repeats,
        "batch1_s_per_video": float(np.median(single)),
        "batch2_s_per_video": float(np.median(batch)),
        "ratio_batch2_over_batch1": float(np.median(batch) / np.median(single)),
    }


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m svdeploy.benchmarks.longvideo", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="what", required=True)
    over = sub.add_parser("overlap")
    over.add_argument("chunked", type=Path)
    over.add_argument("full", type=Path)
    chain = sub.add_parser("chain")
    chain.add_argument("artifact", type=Path)
    chain.add_argument("--clips", type=int, default=3)
    chain.add_argument("--motion-bucket-id", type=int, default=None)
    chain.add_argument("--decode-overlap", type=int, default=0)
    batch = sub.add_parser("batch")
    batch.add_argument("artifact", type=Path)
    batch.add_argument("--repeats", type=int, default=3)
    for p in (over, chain, batch):
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--steps", type=int, default=None)
        p.add_argument("--backend", default=None)
    args = parser.parse_args(argv)
    if args.what == "overlap":
        out = measure_overlap(args.chunked, args.full, args.seed, args.steps, args.backend)
    elif args.what == "chain":
        out = measure_chain(
            args.artifact,
            args.clips,
            args.seed,
            args.steps,
            args.motion_bucket_id,
            args.decode_overlap,
            args.backend,
        )
    else:
        out = measure_batch(args.artifact, args.repeats, args.steps, args.backend)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
