"""The moving-shapes world: the synthetic videos the demo model is trained on, and the
measurements that say whether a generated video moves the way the world does.

The world (exact, so anyone can render it independently):

* frames 64×64 RGB in [0, 1]; a uniform gray background of level b ∈ [0.10, 0.40];
* one object: a filled disc of radius r or an axis-aligned square of half-side r, r ∈ [5, 8] px,
  antialiased by 4×4 supersampling with a box filter (pixel (i, j) covers [j, j+1) × [i, i+1));
* its colour sets its direction: red → +x, blue → −x, green → +y (down), yellow → −y (up);
* a constant speed v ∈ [0.5, 3.0] px per frame, the object fully inside the frame in every
  frame; clips are written at 7 fps.

Pure NumPy; every draw comes from ``numpy.random.default_rng([seed, index])``, so clip ``index``
of a seed is the same whatever else is rendered.
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, Sequence, Tuple, Union

import numpy as np

SIZE = 64
FPS = 7
SUPERSAMPLE = 4
BACKGROUND_RANGE = (0.10, 0.40)
RADIUS_RANGE = (5.0, 8.0)
SPEED_RANGE = (0.5, 3.0)
SHAPES = ("disc", "square")
# colour name → (RGB, unit direction (dx, dy) in image coordinates, y down)
COLOURS: Dict[str, Tuple[Tuple[float, float, float], Tuple[float, float]]] = {
    "red": ((0.90, 0.15, 0.15), (1.0, 0.0)),
    "blue": ((0.20, 0.35, 0.95), (-1.0, 0.0)),
    "green": ((0.15, 0.80, 0.20), (0.0, 1.0)),
    "yellow": ((0.95, 0.85, 0.15), (0.0, -1.0)),
}
WORLD_COLUMNS = ("path", "shape", "colour", "radius", "speed", "x0", "y0", "background", "frames")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class ShapeClip:
    """One clip of the world: the object's centre is (x0, y0) + t·speed·direction at frame t."""

    shape: str
    colour: str
    radius: float
    speed: float
    x0: float
    y0: float
    background: float
    frames: int

    @property
    def direction(self) -> Tuple[float, float]:
        return COLOURS[self.colour][1]

    @property
    def rgb(self) -> np.ndarray:
        return np.array(COLOURS[self.colour][0], np.float32)

    def centre(self, t: float) -> Tuple[float, float]:
        dx, dy = self.direction
        return self.x0 + t * self.speed * dx, self.y0 + t * self.speed * dy


def max_speed(radius: float, frames: int, size: int = SIZE) -> float:
    """The fastest speed at which an object of ``radius`` stays inside for ``frames`` frames."""
    return (size - 2 * radius) / max(frames - 1, 1)


def draw_clip(
    seed: int,
    index: int,
    frames: int,
    *,
    speed: float | None = None,
    colour: str | None = None,
    size: int = SIZE,
) -> ShapeClip:
    """Clip ``index`` of ``seed``: shape, colour, radius, speed, start and background drawn
    uniformly (speed capped so the object stays inside; ``speed``/``colour`` fix those)."""
    rng = np.random.default_rng([int(seed), int(index)])
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    name = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    radius = float(rng.uniform(*RADIUS_RANGE))
    top = min(SPEED_RANGE[1], max_speed(radius, frames, size))
    v = float(rng.uniform(SPEED_RANGE[0], top))
    background = float(rng.uniform(*BACKGROUND_RANGE))
    along, across = float(rng.random()), float(rng.random())
    name = colour if colour is not None else name
    v = speed if speed is not None else v
    if v > max_speed(radius, frames, size) + 1e-9:
        raise ValueError(
            f"speed {v} px/frame: an object of radius {radius:.2f} leaves the "
            f"{size}px frame within {frames} frames (at most "
            f"{max_speed(radius, frames, size):.3f})"
        )
    # start along the motion axis so the whole path fits; anywhere inside across it
    travel = v * (frames - 1)
    dx, dy = COLOURS[name][1]
    start = radius + along * (size - 2 * radius - travel)
    if dx < 0 or dy < 0:
        start = size - start
    other = radius + across * (size - 2 * radius)
    x0, y0 = (start, other) if dx else (other, start)
    return ShapeClip(shape, name, radius, v, x0, y0, background, frames)


def coverage(shape: str, radius: float, cx: float, cy: float, size: int = SIZE) -> np.ndarray:
    """(size, size) fraction of each pixel inside the object, from 4×4 sub-pixel samples."""
    offsets = (np.arange(SUPERSAMPLE, dtype=np.float64) + 0.5) / SUPERSAMPLE
    coords = (np.arange(size, dtype=np.float64)[:, None] + offsets[None, :]).reshape(-1)
    x = coords[None, :] - cx
    y = coords[:, None] - cy
    if shape == "disc":
        inside = x * x + y * y <= radius * radius
    elif shape == "square":
        inside = (np.abs(x) <= radius) & (np.abs(y) <= radius)
    else:
        raise ValueError(f"shape {shape!r}: expected one of {', '.join(SHAPES)}")
    return inside.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3)).astype(np.float32)


def render_frame(clip: ShapeClip, t: float, size: int = SIZE) -> np.ndarray:
    """Frame ``t`` of ``clip``: (size, size, 3) float32 in [0, 1]."""
    cov = coverage(clip.shape, clip.radius, *clip.centre(t), size=size)[..., None]
    return (clip.background * (1.0 - cov) + clip.rgb * cov).astype(np.float32)


def render_clip(clip: ShapeClip, size: int = SIZE) -> np.ndarray:
    """All frames of ``clip``: (F, size, size, 3) float32 in [0, 1]."""
    return np.stack([render_frame(clip, t, size) for t in range(clip.frames)])


def world_row(path: str, clip: ShapeClip) -> Dict[str, object]:
    return {"path": path, **asdict(clip)}


def read_world(path: PathLike) -> Dict[str, ShapeClip]:
    """The ground truth written beside the clips (``shapes.csv``), by clip path."""
    with open(path, "r", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    casts = {"int": int, "float": float, "str": str}
    types = {f.name: casts[str(f.type)] for f in fields(ShapeClip)}
    return {
        row["path"]: ShapeClip(**{k: cast(row[k]) for k, cast in types.items()}) for row in rows
    }


# ---------------------------------------------------------------------------------------------
# Measuring a video of the world
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectTrack:
    """Where the object is in each frame of a video (pixel coordinates, y down)."""

    centroids: np.ndarray  # (F, 2) x, y
    areas: np.ndarray  # (F,) pixels covered
    colour: str  # nearest world colour of the object in frame 0

    def velocity(self) -> np.ndarray:
        """Least-squares centroid velocity over the frames, px/frame, (vx, vy)."""
        t = np.arange(len(self.centroids), dtype=np.float64)
        t = t - t.mean()
        c = self.centroids - self.centroids.mean(axis=0)
        return (t[:, None] * c).sum(axis=0) / max(float((t * t).sum()), 1e-12)


def _object_weight(frame: np.ndarray, background: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Per-pixel coverage estimate: the projection of (pixel − background) on (colour −
    background), clipped to [0, 1]."""
    axis = rgb - background
    weight = ((frame - background) @ axis) / max(float(axis @ axis), 1e-6)
    return np.clip(weight, 0.0, 1.0)


def track_object(frames: np.ndarray) -> ObjectTrack:
    """Track the one object of a world video (F, H, W, 3) in [0, 1]: the background is the
    median of frame 0's border, the colour the world colour nearest to the pixels that differ
    most from it, and each frame's coverage the projection on that colour."""
    frames = np.asarray(frames, np.float32)
    first = frames[0]
    border = np.concatenate([first[0], first[-1], first[:, 0], first[:, -1]])
    background = np.median(border, axis=0)
    distance = np.abs(first - background).sum(axis=-1)
    strong = first[distance >= np.quantile(distance, 0.995)].mean(axis=0)
    names = list(COLOURS)
    rgbs = np.array([COLOURS[n][0] for n in names], np.float32)
    colour = names[int(np.argmin(((rgbs - strong) ** 2).sum(axis=1)))]
    rgb = np.array(COLOURS[colour][0], np.float32)
    h, w = first.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    centroids, areas = [], []
    for frame in frames:
        weight = _object_weight(frame, background, rgb)
        total = float(weight.sum())
        areas.append(total)
        centroids.append(
            (
                float((weight * xs).sum()) / max(total, 1e-6),
                float((weight * ys).sum()) / max(total, 1e-6),
            )
        )
    return ObjectTrack(np.array(centroids), np.array(areas), colour)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two images in [0, 1]."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


def direction_cosine(track: ObjectTrack, colour: str) -> float:
    """Cosine between the measured velocity and the direction ``colour`` moves in."""
    v = track.velocity()
    norm = float(np.hypot(*v))
    return 0.0 if norm < 1e-9 else float(v @ np.array(COLOURS[colour][1])) / norm


def write_world_csv(path: PathLike, rows: Sequence[Dict[str, object]]) -> None:
    """The ground truth of rendered clips, one row per clip (``WORLD_COLUMNS``), atomically."""
    import io

    from svdeploy.fsutil import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=WORLD_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: (f"{row[k]:.6f}" if isinstance(row[k], float) else row[k]) for k in WORLD_COLUMNS}
        )
    atomic_write_text(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# Writing a data set (svd-data synth-shapes)
# ---------------------------------------------------------------------------------------------
# H.264 in 4:4:4 at a low CRF: the object's colour edges keep full resolution (4:2:0 would
# halve the chroma of a 64×64 frame) and the flat background stays flat.
MP4_PIX_FMT = "yuv444p"
MP4_CRF = "8"


def write_mp4(path: PathLike, frames: np.ndarray, fps: int = FPS) -> None:
    """(F, H, W, 3) float frames in [0, 1] → H.264 mp4 (every frame a key frame is not needed:
    readers decode from the start)."""
    import av

    data = np.clip(np.round(np.asarray(frames) * 255.0), 0, 255).astype(np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height = data.shape[2], data.shape[1]
        stream.pix_fmt = MP4_PIX_FMT
        stream.options = {"crf": MP4_CRF}
        for frame in data:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def synthesize(
    out: PathLike, clips: int, frames: int = 8, seed: int = 0, *, progress: bool = True
) -> Path:
    """Render ``clips`` clips of the world into ``out``: ``clips/NNNNNN.mp4``, ``shapes.csv``
    (the ground truth) and ``labels.csv`` (svd-data motion-buckets with its default options,
    the same code path as for a user's videos). Built in a hidden folder beside ``out`` and
    renamed into place, so an interrupted run leaves no partial data set."""

    from tqdm import tqdm

    from svdeploy.errors import InputError
    from svdeploy.fsutil import apply_umask, make_temp_dir, remove_quietly, replace_dir

    from .motion import label_videos

    out = Path(out)
    if clips < 1 or frames < 2:
        raise InputError(
            f"--clips {clips} --frames {frames}: expected at least 1 clip of at least 2 frames"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(
            f"{str(out)!r} already exists and is not an empty folder; choose "
            "another OUT or remove it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out)
    try:
        (tmp / "clips").mkdir()
        rows = []
        for index in tqdm(range(clips), desc="synth-shapes", unit="clip", disable=not progress):
            clip = draw_clip(seed, index, frames)
            relative = f"clips/{index:06d}.mp4"
            write_mp4(tmp / relative, render_clip(clip))
            rows.append(world_row(relative, clip))
        write_world_csv(tmp / "shapes.csv", rows)
        label_videos(tmp / "clips", tmp / "labels.csv", progress=progress)
        _prefix_label_paths(tmp / "labels.csv", "clips/")
        apply_umask(tmp)
        replace_dir(tmp, out)  # an empty folder there is replaced
    except BaseException:
        remove_quietly(tmp)
        raise
    return out


def _prefix_label_paths(labels: Path, prefix: str) -> None:
    """label_videos writes paths relative to the folder it scanned; make them relative to the
    data set root, where shapes.csv lives too."""
    import io

    from svdeploy.fsutil import atomic_write_text

    with open(labels, "r", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(rows[0])
    for row in rows[1:]:
        writer.writerow([prefix + row[0]] + row[1:])
    atomic_write_text(labels, buffer.getvalue())


def bucket_for_speed(clip: ShapeClip, speed: float, work_dir: PathLike) -> int:
    """The motion_bucket_id svd-data gives ``clip``'s object moving at ``speed`` px/frame:
    the clip is rendered at that speed, written as an mp4 and labelled like training data."""
    from dataclasses import replace

    from .motion import measure_video

    path = Path(work_dir) / "bucket_probe.mp4"
    write_mp4(path, render_clip(replace(clip, speed=speed)))
    try:
        return measure_video(path).bucket()
    finally:
        path.unlink(missing_ok=True)
