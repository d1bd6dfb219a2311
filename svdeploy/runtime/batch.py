"""Batches of images: one loaded artifact, one video per image, each reproducible alone.

Image i of a batch runs with seed ``S + i`` (S given, or drawn once and recorded), so every
video equals its single run ``svd-run --image IMG_i --seed S+i``. The exported graphs have a
batch of one video (the U-Net's batch is the guidance batch), so the videos run one after the
other; what a batch saves is loading (and hashing) the graphs once.

``svd-run --image A --image B --out DIR --format mp4`` writes ``DIR/A.mp4`` and
``DIR/B.mp4`` (``--format png``: folders ``DIR/A/``…), each with its JSON sidecar beside it.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

from svdeploy import __version__
from svdeploy.errors import InputError

from .preprocess import ImageSource

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import GenerationResult, VideoPipeline

OUTPUT_SUFFIX = {"mp4": ".mp4", "gif": ".gif", "webp": ".webp", "npy": ".npy", "png": ""}


def batch_seeds(seed: Optional[int], count: int) -> List[int]:
    from .pipeline import _resolve_seed

    first = _resolve_seed(seed)
    return [first + i for i in range(count)]


def generate_batch(pipe: "VideoPipeline", images: Sequence[ImageSource], *,
                   seed: Optional[int] = None, **options: Any) -> List["GenerationResult"]:
    """One GenerationResult per image, image i with seed ``seed + i`` (module doc)."""
    if len(images) == 0:
        raise InputError("the batch of images is empty: expected at least one image")
    if options.get("image_noise") is not None or options.get("latents") is not None:
        raise InputError("image_noise / latents cannot be given for a batch of images: each "
                         "image draws its own noise from seed + i; run the images one by one")
    return [pipe.generate(image, seed=s, **options)
            for image, s in zip(images, batch_seeds(seed, len(images)))]


def batch_output_paths(images: Sequence[Union[str, os.PathLike]], out_dir: Union[str, os.PathLike],
                       fmt: str) -> List[Path]:
    """``OUT/<image stem><ext>`` per image, refusing duplicates and unknown formats."""
    if fmt not in OUTPUT_SUFFIX:
        raise InputError(f"format {fmt!r}: expected one of {', '.join(OUTPUT_SUFFIX)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {str(out)!r} is a file; with several images (or --format) "
                         "--out is a folder that receives one video per image")
    paths: List[Path] = []
    seen: Dict[str, str] = {}
    for image in images:
        stem = Path(image).stem
        if stem in seen:
            target = str(out / (stem + OUTPUT_SUFFIX[fmt]))
            raise InputError(f"images {seen[stem]!r} and {os.fspath(image)!r} share the name "
                             f"{stem!r}, so both would be written to {target!r}; rename one")
        seen[stem] = os.fspath(image)
        paths.append(out / (stem + OUTPUT_SUFFIX[fmt]))
    return paths


def batch_record(pipe: "VideoPipeline", result: "GenerationResult", image: Union[str, os.PathLike],
                 written: Path, fmt: str, write_seconds: float) -> Dict[str, Any]:
    """The JSON sidecar of one video of a batch (same fields as a single run's)."""
    record: Dict[str, Any] = {
        "svdeploy_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "artifact": str(Path(pipe.artifact_dir).resolve()) if pipe.artifact_dir else None,
        "variant": pipe.manifest.variant,
        "image": str(Path(image).resolve()),
        "output": str(written.resolve()),
        "format": fmt,
        "noise_file": None,
        "num_frames": int(result.frames.shape[0]),
        "height": pipe.manifest.height,
        "width": pipe.manifest.width,
        "decode_chunk_size": pipe.manifest.decode_chunk_size,
        **result.metadata(),
    }
    record["timings"] = dict(result.timings, load_s=pipe.load_seconds, write_s=write_seconds)
    return record


def run_batch_to_dir(pipe: "VideoPipeline", images: Sequence[Union[str, os.PathLike]],
                     out_dir: Union[str, os.PathLike], fmt: str, *, seed: Optional[int] = None,
                     **options: Any) -> List[Dict[str, Any]]:
    """Generate one video per image into ``out_dir`` (created if missing); returns the
    sidecar records. Each video and sidecar is written atomically as soon as it is done."""
    from .preprocess import to_rgb_float
    from .video import save_frames, sidecar_path, write_json_atomic

    paths = batch_output_paths(images, out_dir, fmt)
    rgbs = [to_rgb_float(image) for image in images]    # every image is checked before any run
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    records = []
    for image, rgb, path, s in zip(images, rgbs, paths, batch_seeds(seed, len(images))):
        result = pipe.generate(rgb, seed=s, **options)
        t0 = time.perf_counter()
        written = save_frames(result.frames, path, fps=result.params.fps)
        record = batch_record(pipe, result, image, written, fmt, time.perf_counter() - t0)
        record["sidecar"] = str(write_json_atomic(record, sidecar_path(path)).resolve())
        records.append(record)
    return records


def run_batch_cli(artifact: Union[str, os.PathLike], images: Sequence[Union[str, os.PathLike]],
                  out_dir: Union[str, os.PathLike], fmt: str, *, backend: Optional[str] = None,
                  seed: Optional[int] = None, noise_file: Optional[Union[str, os.PathLike]] = None,
                  verify_hashes: bool = True, progress: bool = True, clips: int = 1,
                  decode_overlap: int = 0, **sampling: Any) -> List[Dict[str, Any]]:
    """``svd-run`` with several images (or --format): every input is checked before the
    artifact is loaded, then ``run_batch_to_dir``."""
    from svdeploy.manifest import read_manifest

    from .chain import check_clips
    from .decode import check_overlap
    from .pipeline import VideoPipeline, resolve_sampling_params
    from .preprocess import to_rgb_float

    if noise_file is not None:
        raise InputError("--noise gives the draws of one run; with several images (or "
                         "--format) each image draws from seed + i: drop --noise or run one image")
    manifest = read_manifest(artifact, verify_hashes=False)
    resolve_sampling_params(manifest, **sampling)
    check_clips(clips)
    check_overlap(decode_overlap, manifest.decode_chunk_size)
    batch_output_paths(images, out_dir, fmt)
    for image in images:
        to_rgb_float(image)
    pipe = VideoPipeline.load(artifact, backend=backend, verify_hashes=verify_hashes)
    return run_batch_to_dir(pipe, images, out_dir, fmt, seed=seed, progress=progress,
                            clips=clips, decode_overlap=decode_overlap, **sampling)


__all__ = ["run_batch_cli", "batch_seeds", "generate_batch", "batch_output_paths", "run_batch_to_dir"]
