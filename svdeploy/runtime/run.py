"""One complete ``svd-run`` job as a library call: check inputs, load, generate, write the
video and its JSON sidecar. The click command in ``cli.py`` only parses options."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from svdeploy import __version__
from svdeploy.errors import OutputError
from svdeploy.fsutil import (
    check_writable_folder,
    json_text,
    publish_all,
    remove_quietly,
    remove_stale_temporaries,
    write_to_temp,
)
from svdeploy.manifest import Manifest, read_manifest, require_complete

from .decode import check_overlap
from .draws import check_clips
from .pipeline import GenerationResult, VideoPipeline, load_noise_file, resolve_sampling_params
from .preprocess import ImageSource, to_rgb_float
from .video import check_fps_for_output, check_output_path, output_path, render_frames, sidecar_path

PathLike = Union[str, os.PathLike]


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_run_outputs(
    out: PathLike, *, artifact: PathLike, inputs: Mapping[str, Optional[PathLike]], overwrite: bool
) -> Tuple[str, Path, Path]:
    """Check, before any work, that the video and its sidecar can be written: never onto an
    input or into the artifact, never over an existing file without ``overwrite``, in a folder
    that takes a write. Returns (kind, output path, sidecar path)."""
    kind = check_output_path(out)
    target, sidecar = output_path(out), sidecar_path(out)
    art = Path(artifact).resolve()
    for label, path in (("output", target), ("sidecar", sidecar)):
        resolved = path.resolve()
        if _inside(resolved, art) or _inside(art, resolved):
            raise OutputError(
                f"{label} {str(path)!r} is inside the artifact {str(artifact)!r} "
                "(or holds it); expected a path outside the artifact"
            )
        for option, given in inputs.items():
            if given is not None and resolved == Path(given).resolve():
                raise OutputError(
                    f"{label} {str(path)!r} is the {option} input; expected "
                    "another path (the input would be destroyed)"
                )
        if label == "sidecar" and path.is_dir():
            raise OutputError(
                f"sidecar {str(path)!r} (OUT + .json) is a folder; expected a "
                "file path: choose another --out"
            )
        exists = path.is_symlink() or (
            path.exists() and not (path.is_dir() and not any(path.iterdir()))
        )
        if exists and not overwrite:
            raise OutputError(f"{label} {str(path)!r} exists; pass --overwrite to replace it")
    check_writable_folder(target.parent, "output")
    remove_stale_temporaries(target)
    remove_stale_temporaries(sidecar)
    return kind, target, sidecar


def check_run_options(
    manifest: Manifest, kind: str, sampling: Dict[str, Any], clips: int, decode_overlap: int
) -> None:
    """The sampling values, the frame rate the output format can hold, the chain length and
    the decode overlap, all refused before any graph is hashed or loaded."""
    check_fps_for_output(kind, resolve_sampling_params(manifest, **sampling).fps)
    check_clips(clips)
    check_overlap(decode_overlap, manifest.decode_chunk_size)


def run_record(
    pipe: VideoPipeline,
    result: GenerationResult,
    *,
    artifact: PathLike,
    image: PathLike,
    target: Path,
    kind: str,
    noise_file: Optional[PathLike],
    verify_hashes: bool,
    write_seconds: float,
) -> Dict[str, Any]:
    """The JSON sidecar of one video (a single run or one video of a batch)."""
    record: Dict[str, Any] = {
        "svdeploy_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "artifact": str(Path(artifact).resolve()),
        "variant": pipe.manifest.variant,
        "image": str(Path(image).resolve()),
        "output": str(target.resolve()),
        "format": kind,
        "noise_file": str(Path(noise_file).resolve()) if noise_file is not None else None,
        "num_frames": int(result.frames.shape[0]),  # clips·(F−1)+1 for a chain
        "height": pipe.manifest.height,
        "width": pipe.manifest.width,
        "decode_chunk_size": pipe.manifest.decode_chunk_size,
        "verify_hashes": verify_hashes,
        **result.metadata(),
    }
    record["timings"] = dict(result.timings, load_s=pipe.load_seconds, write_s=write_seconds)
    return record


def publish_video(rendered: Path, target: Path, sidecar: Path, record: Dict[str, Any]) -> None:
    """Write the sidecar to a temporary and publish it with the rendered video: both appear
    together or neither does (an earlier pair stays as it was)."""
    record["sidecar"] = str(sidecar.resolve())
    try:
        sidecar_tmp = write_to_temp(
            sidecar, lambda tmp: tmp.write_text(json_text(record), encoding="utf-8"), ".json"
        )
    except BaseException:
        remove_quietly(rendered)
        raise
    publish_all([(rendered, target), (sidecar_tmp, sidecar)])


def run_to_file(
    artifact: Union[str, os.PathLike],
    image: Union[str, os.PathLike],
    out: Union[str, os.PathLike],
    *,
    backend: Optional[str] = None,
    precision: Optional[str] = None,
    seed: Optional[int] = None,
    noise_file: Optional[Union[str, os.PathLike]] = None,
    verify_hashes: bool = True,
    progress: bool = True,
    fps: Optional[int] = None,
    motion_bucket_id: Optional[int] = None,
    noise_aug_strength: Optional[float] = None,
    min_guidance_scale: Optional[float] = None,
    max_guidance_scale: Optional[float] = None,
    num_inference_steps: Optional[int] = None,
    clips: int = 1,
    decode_overlap: int = 0,
    overwrite: bool = False,
    lite_python: Optional[str] = None,
) -> Dict[str, Any]:
    """Generate a video from ``image`` with ``artifact`` into ``out`` (format by extension)
    and write ``out``.json beside it. Returns the sidecar record. ``clips`` chains clips
    (``chain``), ``decode_overlap`` blends overlapping decoder windows (``decode``);
    ``lite_python`` names the interpreter with MindSpore Lite for the lite backend.

    ``out`` and its sidecar are refused if they exist (unless ``overwrite``), name an input or
    lie inside the artifact; both are written to temporaries and appear together or not at all."""
    start = time.perf_counter()
    sampling: Dict[str, Any] = dict(
        fps=fps,
        motion_bucket_id=motion_bucket_id,
        noise_aug_strength=noise_aug_strength,
        min_guidance_scale=min_guidance_scale,
        max_guidance_scale=max_guidance_scale,
        num_inference_steps=num_inference_steps,
    )
    run = _check_inputs(
        artifact, image, out, noise_file, overwrite, sampling, clips, decode_overlap
    )
    pipe = VideoPipeline.load(
        artifact,
        backend=backend,
        verify_hashes=verify_hashes,
        precision=precision,
        lite_python=lite_python,
    )
    result = pipe.generate(run.image, seed=seed, progress=progress, **run.options)
    return _write_outputs(pipe, result, run, artifact, image, out, noise_file, verify_hashes, start)


@dataclass(frozen=True)
class _CheckedRun:
    """A run's inputs once checked, all of them before the graphs are hashed and loaded."""

    kind: str
    target: Path
    sidecar: Path
    image: ImageSource
    options: Dict[str, Any]  # generate()'s keywords besides seed and progress


def _check_inputs(
    artifact: PathLike,
    image: PathLike,
    out: PathLike,
    noise_file: Optional[PathLike],
    overwrite: bool,
    sampling: Dict[str, Any],
    clips: int,
    decode_overlap: int,
) -> _CheckedRun:
    """Check every user input before the graphs are hashed and loaded (minutes on a full-size
    artifact), so that a typo fails at once."""
    manifest = read_manifest(artifact, verify_hashes=False)
    require_complete(manifest, artifact)
    inputs = {
        "--image": image if isinstance(image, (str, os.PathLike)) else None,
        "--noise": noise_file,
    }
    kind, target, sidecar = check_run_outputs(
        out, artifact=artifact, inputs=inputs, overwrite=overwrite
    )
    check_run_options(manifest, kind, sampling, clips, decode_overlap)
    rgb: ImageSource = to_rgb_float(image)
    image_noise = latents = None
    if noise_file is not None:
        image_noise, latents = load_noise_file(
            noise_file, (1, 3, manifest.height, manifest.width), (1, *manifest.latent_shape)
        )
    options = dict(
        image_noise=image_noise,
        latents=latents,
        clips=clips,
        decode_overlap=decode_overlap,
        **sampling,
    )
    return _CheckedRun(kind, target, sidecar, rgb, options)


def _write_outputs(
    pipe: VideoPipeline,
    result: GenerationResult,
    run: _CheckedRun,
    artifact: PathLike,
    image: PathLike,
    out: PathLike,
    noise_file: Optional[PathLike],
    verify_hashes: bool,
    start: float,
) -> Dict[str, Any]:
    """Render the video and publish it with its sidecar; the record's total time runs from
    ``start`` to just before the publish, which the record itself cannot include."""
    t0 = time.perf_counter()
    rendered = render_frames(result.frames, out, fps=result.params.fps)
    record = run_record(
        pipe,
        result,
        artifact=artifact,
        image=image,
        target=run.target,
        kind=run.kind,
        noise_file=noise_file,
        verify_hashes=verify_hashes,
        write_seconds=time.perf_counter() - t0,
    )
    record["timings"]["total_s"] = time.perf_counter() - start
    publish_video(rendered, run.target, run.sidecar, record)
    return record
