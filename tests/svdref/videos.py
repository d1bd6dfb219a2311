"""Synthetic training videos for the data and motion-bucket tests (PyAV, H.264, tiny sizes).

* index videos: every pixel of frame ``i`` has the gray level :func:`index_level(i) <index_level>`,
  so a decoded clip tells which frames were taken (:func:`decode_index`);
* motion videos: a textured square moving horizontally at a chosen speed (bouncing off the
  sides, so the speed never changes) over a still textured background; speed 0 is a still video;
* :func:`make_dataset` lays out a whole training folder: those videos, a too-short one, a corrupt
  ``.mp4`` (random bytes), a non-video file, and a labels CSV that also names a missing file.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import av
import numpy as np
from scipy import ndimage

INDEX_BASE = 16
INDEX_STEP = 6  # gray levels between consecutive frame indices; codec error stays ≪ 3
MAX_INDEX_FRAMES = (255 - INDEX_BASE) // INDEX_STEP + 1


def write_video(
    path: os.PathLike, frames: np.ndarray, fps: int, gop: int = 4, crf: int = 4
) -> None:
    """(N, H, W, 3) uint8 RGB → H.264 mp4 (yuv420p, near-lossless ``crf``, keyframe every
    ``gop`` frames so that seeking has work to do)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames {frames.shape} {frames.dtype}: expected (N, H, W, 3) uint8")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "g": str(gop), "keyint_min": str(gop)}
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def index_level(index: int) -> int:
    if not 0 <= index < MAX_INDEX_FRAMES:
        raise ValueError(f"frame index {index}: only 0..{MAX_INDEX_FRAMES - 1} can be encoded")
    return INDEX_BASE + INDEX_STEP * index


def decode_index(value_minus1_to_1: float) -> int:
    """A decoded mean pixel value in [−1, 1] → the frame index it encodes."""
    level = (value_minus1_to_1 + 1.0) * 127.5
    return int(round((level - INDEX_BASE) / INDEX_STEP))


def index_frames(count: int, height: int, width: int) -> np.ndarray:
    levels = np.array([index_level(i) for i in range(count)], dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def _texture(rng: np.random.Generator, height: int, width: int, sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.random((height, width)), sigma)
    noise = (noise - noise.min()) / max(float(noise.max() - noise.min()), 1e-9)
    return noise


def moving_square_frames(
    count: int, height: int, width: int, speed: float, square: int = 20, seed: int = 0
) -> np.ndarray:
    """A textured ``square`` moving horizontally at ``speed`` px/frame, bouncing at the sides,
    over a still, darker textured background. (N, H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    background = 30 + 90 * _texture(rng, height, width, 1.5)
    patch = 120 + 120 * _texture(rng, square, square, 1.5)
    travel = width - square
    top = (height - square) // 2
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for i in range(count):
        distance = speed * i
        # triangle wave: bounce between 0 and travel without changing speed
        phase = distance % (2 * travel) if travel > 0 else 0.0
        left = int(round(phase if phase <= travel else 2 * travel - phase))
        image = background.copy()
        image[top : top + square, left : left + square] = patch
        frames[i] = np.clip(image, 0, 255).astype(np.uint8)[..., None]
    return frames


@dataclass
class SyntheticDataset:
    """Where :func:`make_dataset` put things and what they hold."""

    root: Path
    csv_path: Path
    frame_counts: Dict[str, int] = field(default_factory=dict)  # relative path → frames
    fps: Dict[str, int] = field(default_factory=dict)
    corrupt: str = "corrupt.mp4"
    missing: str = "missing.mp4"
    short: str = "short.mp4"
    non_video: str = "notes.txt"


INDEX_VIDEOS = {"index_a.mp4": 40, "index_b.mp4": 30, "nested/index_c.mp4": 36}
MOTION_SPEEDS = {"still.mp4": 0.0, "nested/slow.mp4": 1.0, "fast.mp4": 3.0}


def make_dataset(
    root: os.PathLike,
    height: int = 48,
    width: int = 64,
    fps: int = 12,
    motion_fps: int = 8,
    motion_frames: int = 24,
    motion_bucket_ids: Optional[Dict[str, int]] = None,
) -> SyntheticDataset:
    """Write the synthetic training folder and ``labels.csv`` (path,length,motion_bucket_id and
    an extra ``caption`` column) under ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "nested").mkdir(exist_ok=True)
    data = SyntheticDataset(root=root, csv_path=root / "labels.csv")
    for name, count in INDEX_VIDEOS.items():
        write_video(root / name, index_frames(count, height, width), fps)
        data.frame_counts[name] = count
        data.fps[name] = fps
    for seed, (name, speed) in enumerate(MOTION_SPEEDS.items()):
        frames = moving_square_frames(motion_frames, 64, 96, speed, seed=seed)
        write_video(root / name, frames, motion_fps)
        data.frame_counts[name] = motion_frames
        data.fps[name] = motion_fps
    write_video(root / data.short, index_frames(3, height, width), fps)
    data.frame_counts[data.short] = 3
    data.fps[data.short] = fps
    (root / data.corrupt).write_bytes(np.random.default_rng(7).bytes(4096))
    (root / data.non_video).write_text("not a video\n")
    buckets = {"still.mp4": 0, "nested/slow.mp4": 60, "fast.mp4": 200}
    buckets.update(motion_bucket_ids or {})
    rows: List[Sequence[object]] = []
    for name, count in data.frame_counts.items():
        rows.append((name, count, buckets.get(name, 127), f"video {name}"))
    rows.append((data.corrupt, 40, 127, "random bytes"))
    rows.append((data.missing, 40, 127, "no such file"))
    write_labels(data.csv_path, rows, header=("path", "length", "motion_bucket_id", "caption"))
    return data


def write_labels(
    path: os.PathLike,
    rows: Sequence[Sequence[object]],
    header: Optional[Sequence[str]] = ("path", "length", "motion_bucket_id"),
) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)


def count_frames(path: os.PathLike) -> int:
    """Frames PyAV decodes from ``path`` (independent of the code under test)."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
