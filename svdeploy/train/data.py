"""Training data: a labels CSV over a folder of videos → fixed-size clips for SVD fine-tuning.

Labels (``metadata``): a CSV whose header names at least ``path,length,motion_bucket_id`` (other
columns are ignored); ``path`` is relative to ``data_dir``, ``length`` is the video's frame count
and ``motion_bucket_id`` an integer in 0..255 (``svd-data motion-buckets`` writes such a file).

A clip is ``frames`` frames taken every ``step`` frames from a start drawn uniformly in
``[0, length − (frames − 1)·step − 1]``, resized (aspect kept, covering) and center-cropped to
``height × width``, as float32 in [−1, 1] of shape (frames, 3, H, W). Videos that are missing,
unreadable or too short are skipped with a warning and counted, never ending a run; a malformed
CSV is an error naming the file and the line.

Iteration order and clip starts depend only on ``seed``, the epoch and the row, so a run resumed
from :meth:`VideoDataset.state_dict` sees exactly the samples it would have seen.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import av
import numpy as np
from PIL import Image
from tqdm import tqdm

from svdeploy.errors import ConfigError, InputError

from .motion import VideoTooShortError, stream_fps

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "length", "motion_bucket_id")
SKIP_REASONS = ("missing", "unreadable", "too_short")
# Below this start frame, decoding from the beginning is as cheap as seeking.
SEEK_MIN_FRAMES = 16
# Errors PyAV / the OS raise for files that are not decodable videos.
_DECODE_ERRORS = (av.FFmpegError, OSError, EOFError, UnicodeDecodeError)

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class VideoDatasetConfig:
    """Dataset options; names follow the seed's ``train.dataset.init_args`` (mindone
    ``configs/svd_train.yaml``) plus the output size, a fallback fps and the data seed."""

    data_dir: str = ""  # root the CSV paths are relative to
    metadata: str = ""  # the labels CSV
    frames: int = 4  # frames per clip
    step: int = 5  # take every step-th frame
    height: int = 576
    width: int = 1024
    default_fps: float = 7.0  # when a container stores no frame rate
    seed: int = 42  # iteration order and clip starts
    shuffle: bool = True  # shuffle the rows each epoch (else CSV order)

    @property
    def clip_span(self) -> int:
        """Frames of the source video a clip covers, first to last."""
        return (self.frames - 1) * self.step + 1

    def validate(self, path: str = "dataset") -> None:
        for name in ("data_dir", "metadata"):
            if not getattr(self, name):
                raise ConfigError(f"{path}.{name} is empty: expected a path")
        for name in ("frames", "step", "height", "width"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"{path}.{name} = {value}: expected a positive integer")
        if not (self.default_fps > 0 and math.isfinite(self.default_fps)):
            raise ConfigError(f"{path}.default_fps = {self.default_fps}: expected a number > 0")
        if self.seed < 0:
            raise ConfigError(f"{path}.seed = {self.seed}: expected an integer ≥ 0")


# ---------------------------------------------------------------------------------------------
# Labels CSV
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelRow:
    path: str  # as written in the CSV (relative to data_dir)
    length: int
    motion_bucket_id: int
    line: int  # line of the CSV it came from, for messages


def _parse_int(text: str, what: str, where: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InputError(f"{where}: {what} = {text!r}: expected an integer") from None


def read_labels(metadata: PathLike) -> List[LabelRow]:
    """Parse and validate the labels CSV; every error names the file and line."""
    metadata = Path(metadata)
    if not metadata.is_file():
        raise InputError(f"labels file {str(metadata)!r} does not exist")
    rows: List[LabelRow] = []
    with open(metadata, "r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header: Optional[List[str]] = None
        columns: Dict[str, int] = {}
        try:
            for record in reader:
                where = f"{metadata}, line {reader.line_num}"
                if not record or all(not cell.strip() for cell in record):
                    continue
                if header is None:
                    header = [cell.strip().lower() for cell in record]
                    missing = [c for c in REQUIRED_COLUMNS if c not in header]
                    if missing:
                        raise InputError(
                            f"{where}: header {','.join(record)!r} lacks column(s) "
                            f"{', '.join(missing)}; expected a first line naming at least "
                            f"{','.join(REQUIRED_COLUMNS)}"
                        )
                    duplicates = sorted({c for c in header if header.count(c) > 1 and c})
                    if duplicates:
                        raise InputError(
                            f"{where}: header repeats column(s) {', '.join(duplicates)}"
                        )
                    columns = {name: header.index(name) for name in REQUIRED_COLUMNS}
                    continue
                if len(record) != len(header):
                    raise InputError(
                        f"{where}: {len(record)} column(s), expected {len(header)} "
                        f"({','.join(header)})"
                    )
                path = record[columns["path"]].strip()
                if not path:
                    raise InputError(f"{where}: empty path")
                length = _parse_int(record[columns["length"]], "length", where)
                if length < 1:
                    raise InputError(f"{where}: length = {length}: expected a frame count ≥ 1")
                bucket = _parse_int(record[columns["motion_bucket_id"]], "motion_bucket_id", where)
                if not 0 <= bucket <= 255:
                    raise InputError(f"{where}: motion_bucket_id = {bucket}: expected 0..255")
                rows.append(LabelRow(path, length, bucket, reader.line_num))
        except csv.Error as exc:
            raise InputError(f"{metadata}, line {reader.line_num}: not valid CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{metadata}: not UTF-8 text ({exc.reason})") from None
    if header is None:
        raise InputError(
            f"labels file {str(metadata)!r} is empty: expected a header "
            f"{','.join(REQUIRED_COLUMNS)} and one row per video"
        )
    if not rows:
        raise InputError(f"labels file {str(metadata)!r} has a header but no rows")
    return rows


# ---------------------------------------------------------------------------------------------
# Frames: pure functions over numpy arrays
# ---------------------------------------------------------------------------------------------
def cover_size(src_height: int, src_width: int, height: int, width: int) -> Tuple[int, int]:
    """Smallest aspect-preserving size of a ``src`` image that covers ``height × width``."""
    scale = max(height / src_height, width / src_width)
    return (max(height, int(round(src_height * scale))), max(width, int(round(src_width * scale))))


def resize_cover_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w, 3) uint8 → (height, width, 3) uint8: bicubic resize to cover, then center crop."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image {image.shape} {image.dtype}: expected (h, w, 3) uint8")
    new_height, new_width = cover_size(image.shape[0], image.shape[1], height, width)
    if (new_height, new_width) != image.shape[:2]:
        image = np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.BICUBIC))
    top = (new_height - height) // 2
    left = (new_width - width) // 2
    return image[top : top + height, left : left + width]


def to_model_range(frames: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) uint8 → (F, 3, H, W) float32 in [−1, 1]."""
    return (frames.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(127.5)) - np.float32(1.0)


def clip_indices(start: int, frames: int, step: int) -> List[int]:
    return [start + i * step for i in range(frames)]


def draw_start(length: int, frames: int, step: int, rng: np.random.Generator) -> int:
    """Uniform start in [0, length − (frames − 1)·step − 1]."""
    last_start = length - ((frames - 1) * step + 1)
    if last_start < 0:
        raise VideoTooShortError(
            f"{length} frames: a clip of {frames} frames every {step} needs "
            f"{(frames - 1) * step + 1}"
        )
    return int(rng.integers(0, last_start + 1))


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------
def _seek_indexed(
    container: Any, stream: Any, first_needed: int, fps: float
) -> Optional[Iterator[Tuple[int, Any]]]:
    """Seek near ``first_needed`` and yield ``(index, frame)``, indices from timestamps.

    Returns None when the timestamps do not sit on a constant-rate grid (the caller then
    decodes from the start): frame indices can only be derived from times at a constant rate.
    """
    time_base = stream.time_base
    if not time_base or fps <= 0:
        return None
    origin = stream.start_time or 0
    target = origin + int(first_needed / fps / float(time_base))
    try:
        container.seek(target, stream=stream, backward=True, any_frame=False)
    except av.FFmpegError:
        return None
    decoder = container.decode(stream)

    def index_of(frame: Any) -> Optional[int]:
        if frame.pts is None:
            return None
        exact = float((frame.pts - origin) * time_base) * fps
        nearest = int(round(exact))
        return nearest if abs(exact - nearest) < 0.25 else None

    first = next(decoder, None)
    if first is None:
        return None
    first_index = index_of(first)
    if first_index is None or not 0 <= first_index <= first_needed:
        return None

    def generate() -> Iterator[Tuple[int, Any]]:
        previous = first_index
        yield first_index, first
        for frame in decoder:
            index = index_of(frame)
            if index is None or index != previous + 1:
                raise _OffGrid()
            previous = index
            yield index, frame

    return generate()


class _OffGrid(Exception):
    """Timestamps after a seek left the constant-rate grid."""


def read_frames(
    path: PathLike, indices: Sequence[int], default_fps: float, seek: bool = True
) -> Tuple[np.ndarray, float]:
    """Decode only the frames ``indices`` (ascending) of ``path`` → ((N, h, w, 3) uint8, fps).

    Frames before the first index are skipped (after a seek when it lands on a constant-rate
    timestamp grid, else by decoding from the start); decoding stops after the last index.
    Raises :class:`VideoTooShortError` when the video ends first, ``av.FFmpegError`` /
    ``OSError`` when it cannot be decoded.
    """
    indices = list(indices)
    if not indices or any(b <= a for a, b in zip(indices, indices[1:])) or indices[0] < 0:
        raise ValueError(f"frame indices {indices}: expected a non-empty ascending list ≥ 0")
    wanted = set(indices)
    if seek and indices[0] >= SEEK_MIN_FRAMES:
        result = _read_with_seek(path, indices, wanted, default_fps)
        if result is not None:
            return result
    with av.open(str(path)) as container:
        stream = _video_stream(container, path)
        fps, _ = stream_fps(stream, default_fps)
        decoded = _collect(enumerate(container.decode(stream)), indices, wanted, path)
    return decoded, fps


def _read_with_seek(
    path: PathLike, indices: List[int], wanted: set, default_fps: float
) -> Optional[Tuple[np.ndarray, float]]:
    with av.open(str(path)) as container:
        stream = _video_stream(container, path)
        fps, from_file = stream_fps(stream, default_fps)
        if not from_file:  # frame times cannot be turned into indices without the real rate
            return None
        indexed = _seek_indexed(container, stream, indices[0], fps)
        if indexed is None:
            return None
        try:
            return _collect(indexed, indices, wanted, path), fps
        except _OffGrid:
            return None


def _video_stream(container: Any, path: PathLike) -> Any:
    if not container.streams.video:
        raise InputError(f"{path}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _collect(
    indexed_frames: Iterator[Tuple[int, Any]], indices: List[int], wanted: set, path: PathLike
) -> np.ndarray:
    out: List[np.ndarray] = []
    last = indices[-1]
    seen = -1
    for index, frame in indexed_frames:
        seen = index
        if index in wanted:
            out.append(frame.to_ndarray(format="rgb24"))
            if index == last:
                break
    if len(out) < len(indices):
        raise VideoTooShortError(f"{path}: ended after frame {seen}, frame {last} is needed")
    return np.stack(out)


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One training example."""

    frames: np.ndarray  # (F, 3, H, W) float32 in [−1, 1]
    cond_image: np.ndarray  # (3, H, W) float32: the clip's first frame
    fps: float  # frame rate of the video file (or default_fps)
    motion_bucket_id: int
    path: str  # as in the CSV
    start: int  # first frame index taken
    step: int
    epoch: int
    row: int  # row number among the usable rows

    @property
    def clip_fps(self) -> float:
        """Frame rate of the clip itself (every ``step``-th frame)."""
        return self.fps / self.step


class VideoDataset:
    """Clips from the videos listed in a labels CSV (see the module docstring).

    ``len()`` is the number of usable rows (rows whose file exists and whose CSV length holds a
    clip). ``iter()`` yields the rest of the current epoch in a seeded order, skipping (with a
    warning, counted in :attr:`skip_counts`) videos that turn out unreadable or too short, then
    moves to the next epoch; ``state_dict()`` saves the position for a resumed run.
    """

    def __init__(self, config: VideoDatasetConfig) -> None:
        config.validate()
        self.config = config
        self.data_dir = Path(config.data_dir)
        if not self.data_dir.is_dir():
            raise InputError(f"data_dir {config.data_dir!r} is not a directory")
        self._skipped: Dict[str, Dict[str, str]] = {reason: {} for reason in SKIP_REASONS}
        self.rows: List[LabelRow] = []
        for row in read_labels(config.metadata):
            if row.length < config.clip_span:
                self._skip(
                    row,
                    "too_short",
                    f"length {row.length} in the CSV is under the "
                    f"{config.clip_span} frames a clip of {config.frames} every "
                    f"{config.step} needs",
                )
            elif not self._file(row).is_file():
                self._skip(row, "missing", "no such file")
            else:
                self.rows.append(row)
        if not self.rows:
            raise InputError(f"{config.metadata}: no usable videos ({self._counts_text()})")
        self._bad_rows: set = set()  # rows found unreadable / too short while iterating
        self._epoch = 0
        self._index = 0

    # ---- bookkeeping -------------------------------------------------------------------------
    def _file(self, row: LabelRow) -> Path:
        return self.data_dir / row.path

    def _skip(self, row: LabelRow, reason: str, detail: str) -> None:
        if row.path not in self._skipped[reason]:
            logger.warning(
                "skipping %s (%s, line %d of the labels): %s", row.path, reason, row.line, detail
            )
        self._skipped[reason][row.path] = detail

    @property
    def skip_counts(self) -> Dict[str, int]:
        """Distinct videos skipped so far, by reason (missing, unreadable, too_short)."""
        return {reason: len(paths) for reason, paths in self._skipped.items()}

    @property
    def skipped(self) -> Dict[str, Dict[str, str]]:
        """reason → {path: why}."""
        return {reason: dict(paths) for reason, paths in self._skipped.items()}

    def _counts_text(self) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in self.skip_counts.items())

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def position(self) -> Tuple[int, int]:
        """(epoch, index in that epoch's order) of the next row to be read."""
        return self._epoch, self._index

    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        for row in self.rows:
            digest.update(f"{row.path}\0{row.length}\0{row.motion_bucket_id}\n".encode("utf-8"))
        return digest.hexdigest()

    def state_dict(self) -> Dict[str, Any]:
        """JSON-serialisable position (and what was found bad) for a resumed run."""
        return {
            "epoch": self._epoch,
            "index": self._index,
            "seed": self.config.seed,
            "shuffle": self.config.shuffle,
            "rows": len(self.rows),
            "fingerprint": self._fingerprint(),
            "skipped": self.skipped,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`; the labels and seed must be the same."""
        try:
            epoch, index = int(state["epoch"]), int(state["index"])
            saved = (state["seed"], state["shuffle"], state["rows"], state["fingerprint"])
            skipped = state["skipped"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"dataset state {state!r}: missing or invalid entry ({exc})"
            ) from None
        current = (self.config.seed, self.config.shuffle, len(self.rows), self._fingerprint())
        if saved != current:
            raise ConfigError(
                "dataset state was saved for other data: (seed, shuffle, rows, fingerprint) = "
                f"{saved[:3]} + {str(saved[3])[:12]}…, this dataset has {current[:3]} + "
                f"{current[3][:12]}…; resume with the same labels CSV and dataset seed"
            )
        if epoch < 0 or not 0 <= index <= len(self.rows):
            raise ConfigError(
                f"dataset state position (epoch {epoch}, index {index}): expected "
                f"epoch ≥ 0 and 0 ≤ index ≤ {len(self.rows)}"
            )
        by_path = {row.path: i for i, row in enumerate(self.rows)}
        for reason in SKIP_REASONS:
            for path, detail in dict(skipped.get(reason, {})).items():
                self._skipped[reason][path] = detail
                if path in by_path:
                    self._bad_rows.add(by_path[path])
        self._epoch, self._index = epoch, index

    # ---- sampling ----------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> np.ndarray:
        """Row numbers in the order epoch ``epoch`` visits them."""
        if not self.config.shuffle:
            return np.arange(len(self.rows))
        return np.random.default_rng([self.config.seed, epoch]).permutation(len(self.rows))

    def load(self, row: int, epoch: int = 0) -> Sample:
        """The clip of usable row ``row`` in epoch ``epoch`` (its start is seeded by both).

        Raises ``InputError`` subclasses / decoder errors; iteration turns those into skips.
        """
        label = self.rows[row]
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch, row])
        start = draw_start(label.length, cfg.frames, cfg.step, rng)
        raw, fps = read_frames(
            self._file(label), clip_indices(start, cfg.frames, cfg.step), cfg.default_fps
        )
        frames = to_model_range(
            np.stack([resize_cover_crop(f, cfg.height, cfg.width) for f in raw])
        )
        return Sample(
            frames=frames,
            cond_image=frames[0].copy(),
            fps=fps,
            motion_bucket_id=label.motion_bucket_id,
            path=label.path,
            start=start,
            step=cfg.step,
            epoch=epoch,
            row=row,
        )

    def _try_load(self, row: int, epoch: int) -> Optional[Sample]:
        label = self.rows[row]
        if not self._file(label).is_file():
            self._skip(label, "missing", "the file disappeared")
        else:
            try:
                return self.load(row, epoch)
            except VideoTooShortError as exc:
                self._skip(
                    label,
                    "too_short",
                    f"{exc} (the CSV says {label.length} frames; "
                    "`svd-data check` compares it with the file)",
                )
            except (InputError,) + _DECODE_ERRORS as exc:
                self._skip(label, "unreadable", f"{type(exc).__name__}: {exc}")
        self._bad_rows.add(row)
        return None

    def __iter__(self) -> Iterator[Sample]:
        """The rest of the current epoch; afterwards the position is (epoch + 1, 0).

        The position moves past a row before its sample is yielded, so a state saved while the
        sample is being used resumes with the next one.
        """
        epoch = self._epoch
        order = self.epoch_order(epoch)
        while self._index < len(order):
            row = int(order[self._index])
            self._index += 1
            if row in self._bad_rows:
                continue
            sample = self._try_load(row, epoch)
            if sample is None:
                continue
            yield sample
        if len(self._bad_rows) == len(self.rows):
            raise InputError(
                f"{self.config.metadata}: every video was skipped ({self._counts_text()})"
            )
        self._epoch, self._index = epoch + 1, 0


# ---------------------------------------------------------------------------------------------
# Checking a labels CSV against its videos
# ---------------------------------------------------------------------------------------------
@dataclass
class LabelProblem:
    line: int
    path: str
    problem: str


@dataclass
class CheckReport:
    rows: int = 0
    problems: List[LabelProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def count_video_frames(path: PathLike) -> int:
    """Frames decoded from ``path`` (every frame is decoded: container counts can be wrong)."""
    with av.open(str(path)) as container:
        stream = _video_stream(container, path)
        return sum(1 for _ in container.decode(stream))


def check_labels(
    metadata: PathLike, data_dir: PathLike, min_frames: int = 1, progress: bool = True
) -> CheckReport:
    """Validate the CSV (raising on malformed rows) and compare every row with its video:
    the file exists, decodes, has exactly ``length`` frames, and at least ``min_frames``."""
    rows = read_labels(metadata)
    report = CheckReport(rows=len(rows))
    for row in tqdm(rows, desc="checking videos", unit="video", disable=not progress):
        path = Path(data_dir) / row.path
        if not path.is_file():
            report.problems.append(LabelProblem(row.line, row.path, "missing file"))
            continue
        try:
            count = count_video_frames(path)
        except (InputError,) + _DECODE_ERRORS as exc:
            report.problems.append(
                LabelProblem(row.line, row.path, f"unreadable ({type(exc).__name__}: {exc})")
            )
            continue
        if count != row.length:
            report.problems.append(
                LabelProblem(
                    row.line,
                    row.path,
                    f"length {row.length} in the CSV, {count} frames in the file",
                )
            )
        if count < min_frames:
            report.problems.append(
                LabelProblem(
                    row.line, row.path, f"{count} frames, under the {min_frames} a clip needs"
                )
            )
    return report
