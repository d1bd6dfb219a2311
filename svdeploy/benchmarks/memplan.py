"""Measured peak resident memory per stage of one ``svd-run``, against ``svd-run --plan``.

``python -m svdeploy.benchmarks.memplan ARTIFACT [--backend B] [--clips N]
[--decode-overlap K] [--steps S]`` runs, in this (fresh) process, the stages of a run as
``VideoPipeline.generate`` does (load, encode, denoise, decode) and prints one JSON line:
the plan's prediction, the measured peak RSS of each stage, and the ratio. Each stage's peak
is this process's VmHWM after the stage, reset to the current RSS before it (Linux
``/proc/self/clear_refs`` = 5), so a stage's figure is its own high-water mark. Run it as a
separate process per case (svd-bench's memory suite does): RSS is a property of a process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_stages(
    artifact: Path,
    backend: Optional[str],
    clips: int = 1,
    decode_overlap: int = 0,
    steps: Optional[int] = None,
    seed: int = 0,
) -> Dict[str, Any]:
    """Peak RSS of each stage of one run in this process, and the plan for the same run."""
    from svdeploy.runtime.plan import plan_for_artifact

    plan = plan_for_artifact(artifact, backend=backend, clips=clips, decode_overlap=decode_overlap)
    pipe, params, measured, seconds, resettable = _measure_run(
        artifact, plan.backend, clips, decode_overlap, steps, seed
    )
    peak = max(measured[s] for s in ("load", "encode", "denoise", "decode"))
    return {
        "artifact": str(artifact),
        "variant": pipe.manifest.variant,
        "backend": plan.backend,
        "clips": clips,
        "decode_overlap": decode_overlap,
        "decode_chunk_size": pipe.manifest.decode_chunk_size,
        "steps": params.num_inference_steps,
        "per_stage_reset": resettable,
        "measured_bytes": measured,
        "measured_peak_bytes": peak,
        "predicted_bytes": plan.stages,
        "predicted_peak_bytes": plan.peak_bytes,
        "error": plan.peak_bytes / peak - 1.0,
        "seconds": seconds,
    }


def _measure_run(
    artifact: Path, backend: str, clips: int, decode_overlap: int, steps: Optional[int], seed: int
) -> Tuple[Any, Any, Dict[str, int], Dict[str, float], bool]:
    """(pipeline, parameters, peak RSS after each stage, seconds of each, whether the peak
    could be reset between stages): the stages run one by one as the pipeline runs them, the
    peak reset before each, so that each stage's own peak is read."""
    from svdeploy.runtime.chain import clip_draws, join_clips
    from svdeploy.runtime.pipeline import VideoPipeline, resolve_sampling_params
    from svdeploy.runtime.preprocess import prepare_image

    measured: Dict[str, int] = {"start": _vm("VmRSS")}
    resettable = _reset_peak()
    t0 = time.perf_counter()
    pipe = VideoPipeline.load(artifact, backend=backend, verify_hashes=False)
    measured["load"] = _vm("VmHWM")
    seconds = {"load": time.perf_counter() - t0}
    image = np.random.default_rng(seed).random(
        (pipe.manifest.height, pipe.manifest.width, 3), dtype=np.float32
    )
    params = resolve_sampling_params(pipe.manifest, num_inference_steps=steps)

    def stage(name: str, work):
        _reset_peak()
        t = time.perf_counter()
        value = work()
        measured[name] = _vm("VmHWM")
        seconds[name] = time.perf_counter() - t
        return value

    noise, latents = clip_draws(pipe, seed, 0)
    prepared = prepare_image(image, pipe.manifest.height, pipe.manifest.width)
    context, image_latent = stage("encode", lambda: pipe._encode(prepared.pixels, noise, params))
    finals = stage(
        "denoise", lambda: _denoise_clips(pipe, seed, clips, latents, context, image_latent, params)
    )
    sequence = join_clips(finals)
    windows = pipe.decode_windows(sequence.shape[0], decode_overlap)
    stage("decode", lambda: pipe.decode_latents(sequence, windows, decode_overlap))
    return pipe, params, measured, seconds, resettable


def _denoise_clips(
    pipe: Any,
    seed: int,
    clips: int,
    latents: np.ndarray,
    context: np.ndarray,
    image_latent: np.ndarray,
    params: Any,
) -> List[np.ndarray]:
    """The clips' final latents as a chained run makes them, with no progress bar or step
    callback, so that the stage measures the pipeline's own memory."""
    from svdeploy.runtime.chain import clip_draws, handover_latent

    bar = _NoBar()
    finals, latent = [], image_latent
    for k in range(clips):
        draw = latents if k == 0 else clip_draws(pipe, seed, k)[1]
        final, _ = pipe._denoise(draw[0], context, latent, params, bar)
        finals.append(final)
        latent = handover_latent(final, pipe.manifest.scheduler["scaling_factor"])
    return finals


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m svdeploy.benchmarks.memplan", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--backend", default=None)
    parser.add_argument("--clips", type=int, default=1)
    parser.add_argument("--decode-overlap", type=int, default=0)
    parser.add_argument(
        "--steps",
        type=int,
        default=2,
        help="denoising steps (memory does not depend on it; default 2)",
    )
    args = parser.parse_args(argv)
    result = measure_stages(
        args.artifact, args.backend, args.clips, args.decode_overlap, args.steps
    )
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
