"""What one replica does for one job, without Ray: the image bytes and the resolved parameters in,
the encoded video out, through the runtime exactly as ``svd-run`` goes (image read from a file
by ``to_rgb_float``, ``VideoPipeline.generate``, ``save_frames``)."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from svdeploy.errors import SvdeployError
from svdeploy.runtime import VideoPipeline, save_frames, to_rgb_float

from .requests import JobRequest


class JobCancelled(SvdeployError):
    """Raised from the step callback when the client cancelled the job."""


def generate_video(
    pipe: VideoPipeline,
    image: bytes,
    request: JobRequest,
    on_step: Optional[Callable[[int, int], None]] = None,
    cancelled: Optional[threading.Event] = None,
) -> Tuple[bytes, Dict[str, Any]]:
    """Run one job; returns the file's bytes (``request.format``) and the run's metadata
    (parameters, seed, backend, image info, timings). ``cancelled`` is checked after every
    denoising step: once set, the run stops with JobCancelled."""

    def step(done: int, total: int) -> None:
        if cancelled is not None and cancelled.is_set():
            raise JobCancelled(f"cancelled after step {done} of {total}")
        if on_step is not None:
            on_step(done, total)

    with tempfile.TemporaryDirectory(prefix="svd-serve-job-") as tmp:
        source = Path(tmp) / "input"
        source.write_bytes(image)
        result = pipe.generate(
            to_rgb_float(source),
            seed=request.seed,
            progress=False,
            on_step=step,
            **request.sampling(),
        )
        t0 = time.perf_counter()
        out = save_frames(
            result.frames, Path(tmp) / f"video.{request.format}", fps=result.params.fps
        )
        data = out.read_bytes()
    metadata = result.metadata()
    metadata["timings"] = dict(metadata["timings"], write_s=time.perf_counter() - t0)
    return data, metadata


__all__ = ["generate_video", "JobCancelled"]
