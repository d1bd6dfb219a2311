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
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from svdeploy.errors import InputError
from svdeploy.fsutil import output_error, remove_quietly

from .draws import resolve_seed
from .pipeline import GenerationResult, VideoPipeline
from .preprocess import ImageSource, to_rgb_float
from .run import check_run_options, check_run_outputs, publish_video, run_record
from .video import OUTPUT_SUFFIX, render_frames


def batch_seeds(seed: Optional[int], count: int) -> List[int]:
    first = resolve_seed(seed)
    return [first + i for i in range(count)]


def generate_batch(
    pipe: VideoPipeline,
    images: Sequence[ImageSource],
    *,
    seed: Optional[int] = None,
    **options: Any,
) -> List[GenerationResult]:
    """One GenerationResult per image, image i with seed ``seed + i`` (module doc)."""
    if len(images) == 0:
        raise InputError("the batch of images is empty: expected at least one image")
    if options.get("image_noise") is not None or options.get("latents") is not None:
        raise InputError(
            "image_noise / latents cannot be given for a batch of images: each "
            "image draws its own noise from seed + i; run the images one by one"
        )
    return [
        pipe.generate(image, seed=s, **options)
        for image, s in zip(images, batch_seeds(seed, len(images)))
    ]


def batch_output_paths(
    images: Sequence[Union[str, os.PathLike]], out_dir: Union[str, os.PathLike], fmt: str
) -> List[Path]:
    """``OUT/<image stem><ext>`` per image, refusing duplicates and unknown formats."""
    if fmt not in OUTPUT_SUFFIX:
        raise InputError(f"format {fmt!r}: expected one of {', '.join(OUTPUT_SUFFIX)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(
            f"output {str(out)!r} is a file; with several images (or --format) "
            "--out is a folder that receives one video per image"
        )
    paths: List[Path] = []
    seen: Dict[str, str] = {}
    for image in images:
        stem = Path(image).stem
        if stem in seen:
            target = str(out / (stem + OUTPUT_SUFFIX[fmt]))
            raise InputError(
                f"images {seen[stem]!r} and {os.fspath(image)!r} share the name "
                f"{stem!r}, so both would be written to {target!r}; rename one"
            )
        seen[stem] = os.fspath(image)
        paths.append(out / (stem + OUTPUT_SUFFIX[fmt]))
    return paths


def check_batch_outputs(
    artifact: Union[str, os.PathLike],
    images: Sequence[Union[str, os.PathLike]],
    paths: Sequence[Path],
    out_dir: Union[str, os.PathLike],
    overwrite: bool,
) -> List[Tuple[str, Path, Path]]:
    """``run.check_run_outputs`` for every video of the batch (never onto any input image or
    into the artifact, never over an existing video or sidecar without ``overwrite``), with
    ``out_dir`` created for the check; a folder created here is removed again if one fails."""
    folder = Path(out_dir)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(folder, exc, "nothing was written") from None
    inputs = {f"--image {os.fspath(image)!r}": image for image in images}
    try:
        return [
            check_run_outputs(path, artifact=artifact, inputs=inputs, overwrite=overwrite)
            for path in paths
        ]
    except BaseException:
        if created:
            remove_quietly(folder)
        raise


def run_batch_to_dir(
    pipe: VideoPipeline,
    images: Sequence[Union[str, os.PathLike]],
    out_dir: Union[str, os.PathLike],
    fmt: str,
    *,
    seed: Optional[int] = None,
    overwrite: bool = False,
    verify_hashes: bool = True,
    **options: Any,
) -> List[Dict[str, Any]]:
    """Generate one video per image into ``out_dir`` (created if missing); returns the
    sidecar records. Each video and its sidecar are published together as soon as they are
    done (``run.publish_video``), so an interrupted batch keeps its finished videos."""
    if pipe.artifact_dir is None:
        raise InputError(
            "a batch writes the artifact's path into each sidecar: expected a "
            "pipeline opened with VideoPipeline.load(artifact folder)"
        )
    paths = batch_output_paths(images, out_dir, fmt)
    rgbs = [to_rgb_float(image) for image in images]  # every image is checked before any run
    outputs = check_batch_outputs(pipe.artifact_dir, images, paths, out_dir, overwrite)
    records = []
    for image, rgb, (kind, target, sidecar), s in zip(
        images, rgbs, outputs, batch_seeds(seed, len(images))
    ):
        result = pipe.generate(rgb, seed=s, **options)
        t0 = time.perf_counter()
        rendered = render_frames(result.frames, target, fps=result.params.fps)
        record = run_record(
            pipe,
            result,
            artifact=pipe.artifact_dir,
            image=image,
            target=target,
            kind=kind,
            noise_file=None,
            verify_hashes=verify_hashes,
            write_seconds=time.perf_counter() - t0,
        )
        publish_video(rendered, target, sidecar, record)
        records.append(record)
    return records


def run_batch_cli(
    artifact: Union[str, os.PathLike],
    images: Sequence[Union[str, os.PathLike]],
    out_dir: Union[str, os.PathLike],
    fmt: str,
    *,
    backend: Optional[str] = None,
    precision: Optional[str] = None,
    seed: Optional[int] = None,
    noise_file: Optional[Union[str, os.PathLike]] = None,
    verify_hashes: bool = True,
    progress: bool = True,
    clips: int = 1,
    decode_overlap: int = 0,
    overwrite: bool = False,
    lite_python: Optional[str] = None,
    **sampling: Any,
) -> List[Dict[str, Any]]:
    """``svd-run`` with several images (or --format): every input and output is checked
    before the artifact is loaded, then ``run_batch_to_dir``."""
    from svdeploy.manifest import read_manifest, require_complete

    if noise_file is not None:
        raise InputError(
            "--noise gives the draws of one run; with several images (or "
            "--format) each image draws from seed + i: drop --noise or run one image"
        )
    manifest = read_manifest(artifact, verify_hashes=False)
    require_complete(manifest, artifact)
    check_run_options(manifest, fmt, sampling, clips, decode_overlap)
    paths = batch_output_paths(images, out_dir, fmt)
    for image in images:
        to_rgb_float(image)
    check_batch_outputs(artifact, images, paths, out_dir, overwrite)
    pipe = VideoPipeline.load(
        artifact,
        backend=backend,
        verify_hashes=verify_hashes,
        precision=precision,
        lite_python=lite_python,
    )
    return run_batch_to_dir(
        pipe,
        images,
        out_dir,
        fmt,
        seed=seed,
        progress=progress,
        clips=clips,
        decode_overlap=decode_overlap,
        overwrite=overwrite,
        verify_hashes=verify_hashes,
        **sampling,
    )


__all__ = [
    "run_batch_cli",
    "batch_seeds",
    "generate_batch",
    "batch_output_paths",
    "run_batch_to_dir",
]
