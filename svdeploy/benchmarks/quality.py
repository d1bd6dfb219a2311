"""``svd-bench quality``: does a model of the moving-shapes world generate the world's motion?

For N fresh images of the world (``svdeploy.train.shapes``, a seed the training data never used)
each image is generated at two motion buckets, the ones ``svd-data motion-buckets`` gives clips
moving at 1 px/frame (slow) and 2.5 px/frame (fast), and every video is measured:

* direction: cosine between the object's centroid velocity (least squares over the frames) and
  the direction its colour moves in;
* speed: |velocity| ÷ the clip speed the bucket came from; and whether the fast video of an image
  moves faster than its slow one;
* fidelity: PSNR of frame 0 against the input image, and the object's area in every frame against
  its area in the input (the object neither vanishes nor smears).

Targets (issue 12): cosine ≥ 0.9 on ≥ 90 % of images at the fast bucket (≥ 0.7 at the slow one),
fast faster than slow on ≥ 90 %, median speed ratio in 0.8–1.25, median frame-0 PSNR ≥ 26 dB,
area within 0.6–1.5× in ≥ 90 % of frames.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from svdeploy.train.shapes import (
    ShapeClip,
    bucket_for_speed,
    direction_cosine,
    draw_clip,
    psnr,
    render_frame,
    track_object,
)

SPEEDS = {"slow": 1.0, "fast": 2.5}  # px/frame of the clips each bucket comes from
COSINE_TARGET = {"slow": 0.7, "fast": 0.9}  # per video, on ≥ SHARE_TARGET of the images
SHARE_TARGET = 0.9
SPEED_RATIO_RANGE = (0.8, 1.25)  # median over the images, per bucket
PSNR_TARGET = 26.0  # dB, frame 0 against the input
AREA_RANGE = (0.6, 1.5)  # per frame, on ≥ SHARE_TARGET of the frames
EVAL_SEED = 1000  # training data uses seed 0


def eval_clips(count: int, frames: int, seed: int = EVAL_SEED) -> List[ShapeClip]:
    """Fresh clips whose object stays inside the frame at the fast speed (so at the slow too)."""
    return [draw_clip(seed, index, frames, speed=SPEEDS["fast"]) for index in range(count)]


def world_buckets(clips: Sequence[ShapeClip], work_dir: Path) -> Dict[str, int]:
    """Median motion_bucket_id that svd-data gives the clips at each speed of :data:`SPEEDS`."""
    return {
        name: int(round(statistics.median(bucket_for_speed(c, speed, work_dir) for c in clips)))
        for name, speed in SPEEDS.items()
    }


@dataclass
class VideoScore:
    image: int
    bucket: str
    cosine: float
    speed: float  # measured px/frame
    speed_ratio: float  # speed ÷ the bucket's clip speed
    psnr0: float  # dB
    area_ratios: List[float]


def score_video(
    frames: np.ndarray, clip: ShapeClip, image: np.ndarray, bucket: str, index: int
) -> VideoScore:
    """Measure one generated video (F, H, W, 3) in [0, 1] of ``clip``'s first frame ``image``."""
    track = track_object(frames)
    speed = float(np.hypot(*track.velocity()))
    input_area = float(track_object(image[None]).areas[0])
    return VideoScore(
        image=index,
        bucket=bucket,
        cosine=direction_cosine(track, clip.colour),
        speed=speed,
        speed_ratio=speed / SPEEDS[bucket],
        psnr0=psnr(frames[0], image),
        area_ratios=[float(a) / max(input_area, 1e-6) for a in track.areas],
    )


@dataclass
class QualityReport:
    backend: str
    buckets: Dict[str, int]
    scores: List[VideoScore] = field(default_factory=list)

    def summary(self) -> Dict[str, Any]:
        """Per bucket and overall figures, each target with whether it is met."""
        out: Dict[str, Any] = {
            "backend": self.backend,
            "images": self.images,
            "buckets": dict(self.buckets),
        }
        for name in SPEEDS:
            rows = [s for s in self.scores if s.bucket == name]
            areas = [a for s in rows for a in s.area_ratios]
            share = float(np.mean([s.cosine >= COSINE_TARGET[name] for s in rows]))
            ratio = float(np.median([s.speed_ratio for s in rows]))
            out[name] = {
                "cosine_median": float(np.median([s.cosine for s in rows])),
                "cosine_share": share,
                "cosine_ok": share >= SHARE_TARGET,
                "speed_median": float(np.median([s.speed for s in rows])),
                "speed_ratio_median": ratio,
                "speed_ratio_ok": SPEED_RATIO_RANGE[0] <= ratio <= SPEED_RATIO_RANGE[1],
                "psnr0_median": float(np.median([s.psnr0 for s in rows])),
                "area_share": float(np.mean([AREA_RANGE[0] <= a <= AREA_RANGE[1] for a in areas])),
            }
            out[name]["psnr0_ok"] = out[name]["psnr0_median"] >= PSNR_TARGET
            out[name]["area_ok"] = out[name]["area_share"] >= SHARE_TARGET
        by_image = {(s.image, s.bucket): s.speed for s in self.scores}
        faster = [by_image[(i, "fast")] > by_image[(i, "slow")] for i in range(self.images)]
        out["faster_share"] = float(np.mean(faster))
        out["faster_ok"] = out["faster_share"] >= SHARE_TARGET
        return out

    @property
    def images(self) -> int:
        return len({s.image for s in self.scores})


def evaluate(
    generate: Callable[[np.ndarray, int, int], np.ndarray],
    backend: str,
    images: int,
    frames: int,
    seed: int = EVAL_SEED,
    log: Callable[[str], None] = lambda _m: None,
    buckets: Optional[Dict[str, int]] = None,
) -> QualityReport:
    """Score ``generate(image (H, W, 3) in [0, 1], motion_bucket_id, seed) → frames (F, H, W, 3)
    in [0, 1]`` on ``images`` fresh world images at the slow and fast buckets: ``buckets`` when
    given (e.g. the model's world.json), else the ones svd-data gives these images' clips."""
    clips = eval_clips(images, frames, seed)
    if buckets is None:
        with tempfile.TemporaryDirectory(prefix="svd-quality-") as work:
            buckets = world_buckets(clips, Path(work))
    report = QualityReport(backend=backend, buckets=buckets)
    for index, clip in enumerate(clips):
        image = render_frame(clip, 0)
        for name, bucket in buckets.items():
            video = generate(image, bucket, index)
            report.scores.append(score_video(video, clip, image, name, index))
        log(
            f"quality [{backend}] image {index + 1}/{images}: "
            + ", ".join(
                f"{s.bucket} cos {s.cosine:+.2f} v {s.speed:.2f}" for s in report.scores[-2:]
            )
        )
    return report


def pipeline_generator(
    artifact: Path, backend: str, steps: Optional[int] = None
) -> Callable[[np.ndarray, int, int], np.ndarray]:
    """A ``generate`` for :func:`evaluate` over an exported artifact and one runtime backend."""
    from svdeploy.runtime.pipeline import VideoPipeline

    pipe = VideoPipeline.load(artifact, backend=backend)

    def generate(image: np.ndarray, bucket: int, seed: int) -> np.ndarray:
        result = pipe.generate(
            image, motion_bucket_id=bucket, seed=seed, num_inference_steps=steps, progress=False
        )
        return result.frames

    return generate


def markdown(summaries: Sequence[Dict[str, Any]]) -> str:
    """One table: a row per backend and bucket, each figure with its target."""
    lines = [
        "| backend | bucket (id) | cosine ≥ target | median cosine | median speed px/f | "
        "median speed ratio | fast > slow | median frame-0 PSNR | area in 0.6–1.5× |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        for name in SPEEDS:
            b = s[name]
            mark = lambda ok: "" if ok else " ✗"  # noqa: E731
            lines.append(
                f"| {s['backend']} | {name} ({s['buckets'][name]}) | "
                f"{b['cosine_share']:.0%} (≥ {COSINE_TARGET[name]}){mark(b['cosine_ok'])} | "
                f"{b['cosine_median']:.3f} | {b['speed_median']:.2f} | "
                f"{b['speed_ratio_median']:.2f}{mark(b['speed_ratio_ok'])} | "
                f"{s['faster_share']:.0%}{mark(s['faster_ok'])} | "
                f"{b['psnr0_median']:.1f} dB{mark(b['psnr0_ok'])} | "
                f"{b['area_share']:.0%}{mark(b['area_ok'])} |"
            )
    return "\n".join(lines) + "\n"


def run_quality(
    artifact: Path,
    backends: Sequence[str],
    images: int,
    out: Path,
    steps: Optional[int] = None,
    seed: int = EVAL_SEED,
    log: Callable[[str], None] = lambda _m: None,
) -> List[Dict[str, Any]]:
    """Evaluate ``artifact`` on each backend; write OUT/quality.json and OUT/quality.md."""
    from svdeploy.fsutil import atomic_write_json, atomic_write_text
    from svdeploy.manifest import read_manifest

    frames = read_manifest(artifact, verify_hashes=False).num_frames
    summaries, details = [], []
    for backend in backends:
        report = evaluate(
            pipeline_generator(artifact, backend, steps), backend, images, frames, seed, log
        )
        summaries.append(report.summary())
        details.append({"summary": summaries[-1], "videos": [asdict(s) for s in report.scores]})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out / "quality.json",
        {"artifact": str(artifact), "seed": seed, "steps": steps, "backends": details},
    )
    atomic_write_text(out / "quality.md", markdown(summaries))
    return summaries
