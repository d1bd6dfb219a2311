"""One complete ``svd-run`` job as a library call: check inputs, load, generate, write the
video and its JSON sidecar. The click command in ``cli.py`` only parses options."""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional, Union

from svdeploy import __version__
from svdeploy.manifest import read_manifest

from .pipeline import VideoPipeline, load_noise_file, resolve_sampling_params
from .preprocess import ImageSource, to_rgb_float
from .video import check_output_path, save_frames, sidecar_path, write_json_atomic


def run_to_file(artifact: Union[str, os.PathLike], image: Union[str, os.PathLike],
                out: Union[str, os.PathLike], *, backend: Optional[str] = None,
                seed: Optional[int] = None, noise_file: Optional[Union[str, os.PathLike]] = None,
                verify_hashes: bool = True, progress: bool = True,
                fps: Optional[int] = None, motion_bucket_id: Optional[int] = None,
                noise_aug_strength: Optional[float] = None,
                min_guidance_scale: Optional[float] = None,
                max_guidance_scale: Optional[float] = None,
                num_inference_steps: Optional[int] = None,
                lite_python: Optional[str] = None) -> Dict[str, Any]:
    """Generate a video from ``image`` with ``artifact`` into ``out`` (format by extension)
    and write ``out``.json beside it. Returns the sidecar record."""
    start = time.perf_counter()
    # Every user input is checked before the graphs are hashed and loaded (minutes on a
    # full-size artifact), so a typo fails at once.
    kind = check_output_path(out)
    manifest = read_manifest(artifact, verify_hashes=False)
    sampling = dict(fps=fps, motion_bucket_id=motion_bucket_id,
                    noise_aug_strength=noise_aug_strength, min_guidance_scale=min_guidance_scale,
                    max_guidance_scale=max_guidance_scale, num_inference_steps=num_inference_steps)
    resolve_sampling_params(manifest, **sampling)
    rgb: ImageSource = to_rgb_float(image)
    image_noise = latents = None
    if noise_file is not None:
        image_noise, latents = load_noise_file(
            noise_file, (1, 3, manifest.height, manifest.width), (1, *manifest.latent_shape))

    pipe = VideoPipeline.load(artifact, backend=backend, verify_hashes=verify_hashes,
                              lite_python=lite_python)
    result = pipe.generate(rgb, seed=seed, image_noise=image_noise, latents=latents,
                           progress=progress, **sampling)
    t0 = time.perf_counter()
    written = save_frames(result.frames, out, fps=result.params.fps)
    write_seconds = time.perf_counter() - t0

    record: Dict[str, Any] = {
        "svdeploy_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "artifact": str(Path(artifact).resolve()),
        "variant": pipe.manifest.variant,
        "image": str(Path(image).resolve()),
        "output": str(written.resolve()),
        "format": kind,
        "noise_file": str(Path(noise_file).resolve()) if noise_file is not None else None,
        "num_frames": pipe.num_frames,
        "height": pipe.manifest.height,
        "width": pipe.manifest.width,
        "decode_chunk_size": pipe.manifest.decode_chunk_size,
        "verify_hashes": verify_hashes,
        **result.metadata(),
    }
    record["timings"] = dict(result.timings, load_s=pipe.load_seconds, write_s=write_seconds,
                             total_s=time.perf_counter() - start)
    record["sidecar"] = str(write_json_atomic(record, sidecar_path(out)).resolve())
    return record
