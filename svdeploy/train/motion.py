"""Motion scores and ``motion_bucket_id`` labels from dense optical flow.

SVD (Blattmann et al. 2023, §3.1 and Appendix C) annotates its training clips with dense optical
flow computed at 2 frames per second at reduced resolution and uses the average flow magnitude
as the clip's motion score; the image-to-video models are conditioned on it through
``motion_bucket_id``. The paper's exact flow estimator settings and its score → bucket mapping
are not published as code, so ours are stated here; they are our own choices, not a replica.

Method (module constants; ``flow_fps``, ``analysis_size`` and ``saturation`` are options of
``svd-data motion-buckets``):

* **Frame sampling.** Frames ``round(k · fps / flow_fps)`` for k = 0, 1, … with ``flow_fps = 2``
  (at most one sample per frame, so a video at ≤ 2 fps uses every frame). A video too short for
  two samples at that rate uses its first and last frames.
* **Analysis resolution.** Luma only, area-downscaled so that the shorter side is at most
  ``analysis_size = 128`` px (never upscaled).
* **Flow.** Farnebäck's two-frame dense flow (G. Farnebäck, "Two-frame motion estimation based on
  polynomial expansion", SCIA 2003), written here in NumPy/SciPy: each frame is approximated
  around every pixel by a quadratic polynomial (weighted least squares, Gaussian applicability
  σ = 1.5 px); the displacement solves the polynomial constraints in the least-squares sense over
  a Gaussian neighbourhood (σ = 3 px), weakly regularised towards its starting estimate;
  3 iterations per level on a pyramid of up to 4 levels (factor 2). On each finer level the
  estimate is refined twice, from the coarser level's flow and from zero, and each pixel keeps
  the one whose warped frame matches better, so a moving object's flow does not bleed onto the
  still background around it.
* **Statistic.** For each pair of consecutive samples, the mean over pixels of ``|flow|``,
  divided by the pair's time gap (s) and by the analysis short side (px), times 100; the video's
  score is the mean over its pairs. Unit: percent of the frame's shorter side per second
  (``%/s``), so the score does not depend on the frame rate, nor on the resolution of videos
  whose shorter side is at least ``analysis_size`` (they are all analysed at that size).
* **Mapping.** ``bucket = round(255 · min(score / saturation, 1))`` with ``saturation = 50 %/s``
  (half the short side per second, averaged over the whole frame, is already a lot of motion):
  deterministic, non-decreasing in the score, 0 for a still video, 255 from the saturation on.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

import av
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from svdeploy.errors import InputError
from svdeploy.fsutil import atomic_write_text

logger = logging.getLogger(__name__)

FLOW_FPS = 2.0
ANALYSIS_SIZE = 128
SATURATION = 50.0
DEFAULT_FPS = 7.0  # used only when a container stores no frame rate (SVD's default fps)
POLY_SIGMA = 1.5
WINDOW_SIGMA = 3.0
LEVELS = 4
ITERATIONS = 3
# Weight of the prior displacement in the per-pixel 2×2 solve, in the units of the smoothed
# AᵀA terms for intensities in [0, 1]; it keeps codec noise in flat areas from becoming flow.
REGULARIZATION = 1e-6
MIN_LEVEL_SIZE = 16

VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
        ".ts",
        ".mts",
        ".3gp",
        ".ogv",
        ".gif",
    }
)
LABEL_COLUMNS = ("path", "length", "motion_bucket_id", "motion_score", "fps")


# ---------------------------------------------------------------------------------------------
# Dense optical flow (Farnebäck), pure functions over numpy arrays
# ---------------------------------------------------------------------------------------------
def gaussian_kernel(sigma: float, radius: Optional[int] = None) -> np.ndarray:
    """Normalised 1-D Gaussian, ``2·radius + 1`` taps (radius defaults to ⌈3σ⌉)."""
    if sigma <= 0:
        raise ValueError(f"sigma = {sigma}: expected > 0")
    radius = int(math.ceil(3 * sigma)) if radius is None else radius
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def polynomial_expansion(image: np.ndarray, sigma: float = POLY_SIGMA) -> np.ndarray:
    """Local quadratic model ``f(x + u) ≈ c + bᵀu + uᵀAu`` at every pixel of a 2-D image.

    Returns (H, W, 5) float64 channels ``b_x, b_y, A_xx, A_yy, A_xy`` (x = column, y = row).
    Weighted least squares with a separable Gaussian applicability: the six correlations with
    ``uˣᵖ uʸᵠ g`` are separable, and the 6×6 normal matrix is the same at every pixel.
    """
    if image.ndim != 2:
        raise ValueError(f"image shape {image.shape}: expected a 2-D (H, W) array")
    radius = max(2, int(math.ceil(2.5 * sigma)))
    g = gaussian_kernel(sigma, radius)
    u = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = {0: g, 1: u * g, 2: u * u * g}
    # basis order: 1, x, y, x², y², xy  as (power of x, power of y)
    powers = ((0, 0), (1, 0), (0, 1), (2, 0), (0, 2), (1, 1))
    f = image.astype(np.float64, copy=False)
    projections = np.empty(f.shape + (6,), dtype=np.float64)
    rows_cache: Dict[int, np.ndarray] = {}
    for k, (px, py) in enumerate(powers):
        if py not in rows_cache:
            rows_cache[py] = ndimage.correlate1d(f, taps[py], axis=0, mode="reflect")
        projections[..., k] = ndimage.correlate1d(rows_cache[py], taps[px], axis=1, mode="reflect")
    moments = [float(np.sum(g * u**p)) for p in range(5)]
    gram = np.array(
        [[moments[pi[0] + pj[0]] * moments[pi[1] + pj[1]] for pj in powers] for pi in powers]
    )
    coeffs = projections @ np.linalg.inv(gram).T  # gram is symmetric
    out = np.empty(f.shape + (5,), dtype=np.float64)
    out[..., 0] = coeffs[..., 1]
    out[..., 1] = coeffs[..., 2]
    out[..., 2] = coeffs[..., 3]
    out[..., 3] = coeffs[..., 4]
    out[..., 4] = coeffs[..., 5] / 2.0  # the xy coefficient is 2·A_xy
    return out


def _downsample(image: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(image, 1.0, mode="reflect")[::2, ::2]


def _pyramid(image: np.ndarray, levels: int) -> List[np.ndarray]:
    """Finest first; stops before a side would drop under MIN_LEVEL_SIZE."""
    out = [image]
    while len(out) < levels and min(out[-1].shape) // 2 >= MIN_LEVEL_SIZE:
        out.append(_downsample(out[-1]))
    return out


def _upsample_flow(flow: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    zoom = (shape[0] / flow.shape[0], shape[1] / flow.shape[1])
    up = np.stack(
        [
            ndimage.zoom(flow[..., c], zoom, order=1, mode="nearest", grid_mode=True)
            for c in range(2)
        ],
        axis=-1,
    )
    # displacements are in pixels of the level, so they scale with it
    up[..., 0] *= zoom[1]
    up[..., 1] *= zoom[0]
    return up


def _refine(
    expansion1: np.ndarray,
    expansion2: np.ndarray,
    prior: np.ndarray,
    window_sigma: float,
    regularization: float,
) -> np.ndarray:
    """One Farnebäck displacement update (total displacement, given the prior)."""
    height, width = prior.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    coords = [rows + prior[..., 1], cols + prior[..., 0]]
    warped = np.stack(
        [
            ndimage.map_coordinates(expansion2[..., c], coords, order=1, mode="nearest")
            for c in range(5)
        ],
        axis=-1,
    )
    a_xx = (expansion1[..., 2] + warped[..., 2]) / 2
    a_yy = (expansion1[..., 3] + warped[..., 3]) / 2
    a_xy = (expansion1[..., 4] + warped[..., 4]) / 2
    # Δb = -½ (b₂(x + d̃) − b₁(x)) + A d̃ ; the constraint is A d = Δb
    db_x = (
        -0.5 * (warped[..., 0] - expansion1[..., 0]) + a_xx * prior[..., 0] + a_xy * prior[..., 1]
    )
    db_y = (
        -0.5 * (warped[..., 1] - expansion1[..., 1]) + a_xy * prior[..., 0] + a_yy * prior[..., 1]
    )
    # least squares over the neighbourhood: (Σ w AᵀA + λI) d = Σ w AᵀΔb + λ d̃
    terms = np.stack(
        [
            a_xx * a_xx + a_xy * a_xy,  # (AᵀA)_xx
            a_xy * (a_xx + a_yy),  # (AᵀA)_xy
            a_xy * a_xy + a_yy * a_yy,  # (AᵀA)_yy
            a_xx * db_x + a_xy * db_y,  # (AᵀΔb)_x
            a_xy * db_x + a_yy * db_y,  # (AᵀΔb)_y
        ],
        axis=-1,
    )
    terms = ndimage.gaussian_filter(terms, sigma=(window_sigma, window_sigma, 0), mode="reflect")
    g_xx = terms[..., 0] + regularization
    g_xy = terms[..., 1]
    g_yy = terms[..., 2] + regularization
    h_x = terms[..., 3] + regularization * prior[..., 0]
    h_y = terms[..., 4] + regularization * prior[..., 1]
    det = g_xx * g_yy - g_xy * g_xy
    flow = np.empty_like(prior)
    flow[..., 0] = (g_yy * h_x - g_xy * h_y) / det
    flow[..., 1] = (g_xx * h_y - g_xy * h_x) / det
    return flow


def farneback_flow(
    first: np.ndarray,
    second: np.ndarray,
    *,
    levels: int = LEVELS,
    iterations: int = ITERATIONS,
    poly_sigma: float = POLY_SIGMA,
    window_sigma: float = WINDOW_SIGMA,
    regularization: float = REGULARIZATION,
) -> np.ndarray:
    """Dense flow from ``first`` to ``second`` (2-D intensity arrays, same shape, ~[0, 1]).

    Returns (H, W, 2) float64 ``(dx, dy)``: the content at (row y, col x) of ``first`` is at
    (y + dy, x + dx) in ``second``.
    """
    if first.ndim != 2 or first.shape != second.shape:
        raise ValueError(
            f"frame shapes {first.shape} and {second.shape}: expected two equal 2-D shapes"
        )
    if levels < 1 or iterations < 1:
        raise ValueError(f"levels = {levels}, iterations = {iterations}: expected ≥ 1")
    pyramid1 = _pyramid(np.asarray(first, dtype=np.float64), levels)
    pyramid2 = _pyramid(np.asarray(second, dtype=np.float64), levels)
    flow = np.zeros(pyramid1[-1].shape + (2,), dtype=np.float64)
    for level in range(len(pyramid1) - 1, -1, -1):
        image1, image2 = pyramid1[level], pyramid2[level]
        expansion1 = polynomial_expansion(image1, poly_sigma)
        expansion2 = polynomial_expansion(image2, poly_sigma)
        candidates = [np.zeros(image1.shape + (2,), dtype=np.float64)]
        if level < len(pyramid1) - 1:
            candidates.append(_upsample_flow(flow, image1.shape))
        refined = []
        for candidate in candidates:
            for _ in range(iterations):
                candidate = _refine(expansion1, expansion2, candidate, window_sigma, regularization)
            refined.append(candidate)
        if len(refined) == 1:
            flow = refined[0]
        else:
            # A coarse level blurs weak texture away, so the window there drags a moving
            # object's displacement over the still background around it, and a wrong prior
            # several pixels off cannot be repaired by the local (polynomial) refinement. Keep,
            # per pixel, whichever of "from the coarse prior" / "from zero" matches better.
            errors = [_match_error(image1, image2, f, window_sigma) for f in refined]
            flow = np.where((errors[1] < errors[0])[..., None], refined[1], refined[0])
    return flow


def _match_error(
    image1: np.ndarray, image2: np.ndarray, flow: np.ndarray, window_sigma: float
) -> np.ndarray:
    """Locally averaged squared difference between ``image1`` and ``image2`` warped by ``flow``."""
    height, width = image1.shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    warped = ndimage.map_coordinates(
        image2, [rows + flow[..., 1], cols + flow[..., 0]], order=1, mode="nearest"
    )
    return ndimage.gaussian_filter((warped - image1) ** 2, window_sigma, mode="reflect")


def mean_flow_magnitude(flow: np.ndarray) -> float:
    """Average Euclidean length of the (H, W, 2) flow vectors, in pixels."""
    return float(np.mean(np.hypot(flow[..., 0], flow[..., 1])))


def check_rates(flow_fps: float, default_fps: float) -> None:
    """Refuse a NaN, infinite or non-positive sampling rate (NaN passes every comparison)."""
    for name, value in (("flow_fps", flow_fps), ("default_fps", default_fps)):
        if not math.isfinite(value) or not value > 0:
            raise InputError(f"{name} = {value}: expected a finite number > 0")


def score_to_bucket(score: float, saturation: float = SATURATION) -> int:
    """Motion score (%/s) → ``motion_bucket_id`` in 0..255: linear, saturating at 255."""
    if not saturation > 0 or not math.isfinite(saturation):
        raise InputError(f"saturation = {saturation}: expected a finite number > 0")
    if not math.isfinite(score) or score < 0:
        raise InputError(f"motion score = {score}: expected a finite number ≥ 0")
    return int(round(255 * min(score / saturation, 1.0)))


# ---------------------------------------------------------------------------------------------
# Videos
# ---------------------------------------------------------------------------------------------
def stream_fps(stream: "av.video.stream.VideoStream", default: float) -> Tuple[float, bool]:
    """Frame rate stored in the container (average, else base rate), else ``default``.

    Returns ``(fps, from_file)``.
    """
    for rate in (
        getattr(stream, "average_rate", None),
        getattr(stream, "base_rate", None),
        getattr(stream, "guessed_rate", None),
    ):
        if rate is not None and float(rate) > 0 and math.isfinite(float(rate)):
            return float(rate), True
    return float(default), False


def analysis_shape(height: int, width: int, analysis_size: int) -> Tuple[int, int]:
    """(h, w) with the shorter side at most ``analysis_size`` (aspect kept, never upscaled)."""
    scale = min(1.0, analysis_size / min(height, width))
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


@dataclass
class MotionMeasurement:
    """What :func:`measure_video` found for one video."""

    path: str
    length: int  # decoded frame count
    fps: float
    fps_from_file: bool
    score: float  # %/s, see the module docstring
    pairs: int  # frame pairs the flow was computed on

    def bucket(self, saturation: float = SATURATION) -> int:
        return score_to_bucket(self.score, saturation)


class VideoTooShortError(InputError):
    """A video has fewer frames than needed."""


def _pair_score(
    first: np.ndarray, second: np.ndarray, seconds: float, levels: int, iterations: int
) -> float:
    """Mean flow magnitude as percent of the short side per second."""
    flow = farneback_flow(first, second, levels=levels, iterations=iterations)
    return mean_flow_magnitude(flow) / min(first.shape) * 100.0 / seconds


def measure_video(
    path: Union[str, os.PathLike],
    *,
    flow_fps: float = FLOW_FPS,
    analysis_size: int = ANALYSIS_SIZE,
    default_fps: float = DEFAULT_FPS,
    levels: int = LEVELS,
    iterations: int = ITERATIONS,
) -> MotionMeasurement:
    """Decode ``path`` once, counting frames and scoring motion (see the module docstring).

    Frames are streamed: only the previous sampled frame is kept. Raises ``av.FFmpegError`` /
    ``OSError`` for unreadable files and :class:`VideoTooShortError` for fewer than 2 frames.
    """
    check_rates(flow_fps, default_fps)
    if analysis_size < MIN_LEVEL_SIZE:
        raise InputError(f"analysis_size = {analysis_size}: expected ≥ {MIN_LEVEL_SIZE}")
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise InputError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps, from_file = stream_fps(stream, default_fps)
        stride = max(1.0, fps / flow_fps)
        count, total, pairs = _score_frames(
            path, container.decode(stream), fps, stride, analysis_size, levels, iterations
        )
    return MotionMeasurement(
        path=str(path),
        length=count,
        fps=fps,
        fps_from_file=from_file,
        score=total / pairs,
        pairs=pairs,
    )


def _score_frames(
    path: Union[str, os.PathLike],
    frames: Iterable["av.VideoFrame"],
    fps: float,
    stride: float,
    analysis_size: int,
    levels: int,
    iterations: int,
) -> Tuple[int, float, int]:
    """(frames, summed pair scores, pairs) over the frames sampled every ``stride`` frames;
    only the previous sample is kept, so a long video streams through."""
    shape: Optional[Tuple[int, int]] = None

    def luma(frame: "av.VideoFrame") -> np.ndarray:
        return (
            frame.to_ndarray(
                format="gray", width=shape[1], height=shape[0], interpolation="AREA"
            ).astype(np.float64)
            / 255.0
        )

    next_sample = 0  # k of the next sample, taken at frame round(k · stride)
    previous: Optional[Tuple[int, np.ndarray]] = None
    last_frame = None
    total = 0.0
    pairs = 0
    count = 0
    for index, frame in enumerate(frames):
        count = index + 1
        last_frame = frame
        if index < int(round(next_sample * stride)):
            continue
        while int(round(next_sample * stride)) <= index:
            next_sample += 1
        if shape is None:
            shape = analysis_shape(frame.height, frame.width, analysis_size)
        gray = luma(frame)
        if previous is not None:
            total += _pair_score(previous[1], gray, (index - previous[0]) / fps, levels, iterations)
            pairs += 1
        previous = (index, gray)
    if count < 2:
        raise VideoTooShortError(f"{path}: {count} frame(s); a motion score needs at least 2")
    if pairs == 0:
        # shorter than one sampling interval: compare the first and the last frame
        total = _pair_score(previous[1], luma(last_frame), (count - 1) / fps, levels, iterations)
        pairs = 1
    return count, total, pairs


# ---------------------------------------------------------------------------------------------
# Labelling a folder
# ---------------------------------------------------------------------------------------------
def find_videos(root: Union[str, os.PathLike]) -> Tuple[List[Path], List[Path]]:
    """Files under ``root`` (recursively, sorted) split into (videos by extension, the rest).
    Hidden files and folders (name starting with '.') are ignored."""
    videos: List[Path] = []
    others: List[Path] = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            (videos if path.suffix.lower() in VIDEO_EXTENSIONS else others).append(path)
    key = lambda p: Path(p).relative_to(root).as_posix()  # noqa: E731
    return sorted(videos, key=key), sorted(others, key=key)


@dataclass
class LabelReport:
    """What :func:`label_videos` wrote and skipped (paths relative to the video folder)."""

    out: Path
    labels: List[Tuple[str, MotionMeasurement, int]] = field(default_factory=list)
    unreadable: Dict[str, str] = field(default_factory=dict)  # path → why
    too_short: Dict[str, str] = field(default_factory=dict)
    non_video: List[str] = field(default_factory=list)


def write_labels_csv(
    out: Union[str, os.PathLike], labels: List[Tuple[str, MotionMeasurement, int]]
) -> None:
    """Write ``path,length,motion_bucket_id,motion_score,fps`` atomically (temporary file in the
    same folder, then ``os.replace``: svdeploy.fsutil)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(LABEL_COLUMNS)
    for path, measured, bucket in labels:
        writer.writerow(
            (path, measured.length, bucket, f"{measured.score:.4f}", f"{measured.fps:g}")
        )
    atomic_write_text(out, buffer.getvalue())


def label_videos(
    video_dir: Union[str, os.PathLike],
    out: Union[str, os.PathLike],
    *,
    flow_fps: float = FLOW_FPS,
    analysis_size: int = ANALYSIS_SIZE,
    saturation: float = SATURATION,
    default_fps: float = DEFAULT_FPS,
    progress: bool = True,
) -> LabelReport:
    """Score every video under ``video_dir`` and write the labels CSV ``out``.

    Unreadable and too-short (< 2 frames) videos are skipped with a warning; files without a
    video extension are counted and left alone.
    """
    video_dir = Path(video_dir)
    out = Path(out)
    if not video_dir.is_dir():
        raise InputError(f"video folder {str(video_dir)!r} is not a directory")
    if not out.parent.is_dir():
        raise InputError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist")
    score_to_bucket(0.0, saturation)  # validates saturation before any decoding
    check_rates(flow_fps, default_fps)
    if analysis_size < MIN_LEVEL_SIZE:
        raise InputError(f"analysis_size = {analysis_size}: expected ≥ {MIN_LEVEL_SIZE}")
    videos, others = find_videos(video_dir)
    report = LabelReport(out=out, non_video=[p.relative_to(video_dir).as_posix() for p in others])
    if not videos:
        raise InputError(
            f"no videos under {str(video_dir)!r} ({len(others)} other file(s); "
            f"extensions read: {', '.join(sorted(VIDEO_EXTENSIONS))})"
        )
    for path in tqdm(videos, desc="motion buckets", unit="video", disable=not progress):
        relative = path.relative_to(video_dir).as_posix()
        try:
            measured = measure_video(
                path, flow_fps=flow_fps, analysis_size=analysis_size, default_fps=default_fps
            )
        except VideoTooShortError as exc:
            logger.warning("skipping %s: %s", relative, exc)
            report.too_short[relative] = str(exc)
            continue
        except (InputError, av.FFmpegError, OSError, EOFError) as exc:
            logger.warning("skipping unreadable %s: %s: %s", relative, type(exc).__name__, exc)
            report.unreadable[relative] = f"{type(exc).__name__}: {exc}"
            continue
        report.labels.append((relative, measured, score_to_bucket(measured.score, saturation)))
    if not report.labels:
        raise InputError(
            f"none of the {len(videos)} video(s) under {str(video_dir)!r} could be "
            "scored; nothing written"
        )
    write_labels_csv(out, report.labels)
    return report
