"""Writing frames: mp4 (H.264), gif, webp, a folder of PNGs, or .npy floats.

Every writer produces its result under a temporary name in the target's directory and
renames it into place, so a failed or interrupted run leaves no half-written output.
PyAV is imported only when an mp4 is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, List, Union

import numpy as np

from svdeploy.errors import InputError
from svdeploy.fsutil import (
    apply_umask,
    make_temp_dir,
    output_error,
    publish,
    remove_quietly,
    replace_dir,
    write_to_temp,
)

if TYPE_CHECKING:
    from PIL import Image

# Each kind and the suffix its file gets (png: a folder of frames, no suffix).
OUTPUT_SUFFIX = {"mp4": ".mp4", "gif": ".gif", "webp": ".webp", "npy": ".npy", "png": ""}
OUTPUT_KINDS = tuple(OUTPUT_SUFFIX)
_EXTENSIONS = {".mp4": "mp4", ".gif": "gif", ".webp": "webp", ".npy": "npy"}
PNG_PATTERN = "frame_{:04d}.png"
MP4_CRF = "18"  # visually lossless for H.264
WEBP_QUALITY = 90
# GIF stores frame durations in 1/100 s: above 100 fps a frame would last 0 (players then pick
# their own, usually slow, rate)
MAX_GIF_FPS = 100


def frames_to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] → uint8 by round(x·255) (values outside are clipped first)."""
    if frames.dtype == np.uint8:
        return frames
    return np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)


def output_kind(out: Union[str, os.PathLike]) -> str:
    """'mp4', 'gif', 'webp', 'npy', or 'png' (a folder: no extension, or a trailing slash)."""
    text = os.fspath(out)
    if not text:
        raise InputError(
            "output path is empty: expected a .mp4, .gif, .webp or .npy file, or a folder"
        )
    if text.endswith(("/", os.sep)):
        return "png"
    suffix = Path(text).suffix.lower()
    if suffix == "":
        return "png"
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    raise InputError(
        f"output {text!r} has extension {suffix!r}: expected .mp4, .gif, .webp, .npy, "
        "or a folder (no extension or a trailing /) for PNG frames"
    )


def sidecar_path(out: Union[str, os.PathLike]) -> Path:
    """OUT + '.json' (for a folder: the folder name + '.json' beside it)."""
    text = os.fspath(out).rstrip("/" + os.sep) or os.fspath(out)
    return Path(text + ".json")


def _is_replaceable_png_folder(folder: Path) -> bool:
    """An existing folder may be replaced only if it is empty or holds nothing but frames."""
    return all(
        p.is_file() and p.name.startswith("frame_") and p.suffix == ".png" for p in folder.iterdir()
    )


def output_path(out: Union[str, os.PathLike]) -> Path:
    """The path OUT names (a trailing slash of a frames folder removed)."""
    return Path(os.fspath(out).rstrip("/" + os.sep) or os.fspath(out))


def check_output_path(out: Union[str, os.PathLike]) -> str:
    """Validate OUT before any work is done; returns its kind."""
    kind = output_kind(out)
    path = Path(os.fspath(out).rstrip("/" + os.sep) or os.fspath(out))
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder {str(parent)!r} does not exist; create it first")
    if kind == "png":
        if path.exists() and not path.is_dir():
            raise InputError(
                f"output {str(path)!r} exists and is a file; expected a folder for PNG frames"
            )
        if path.is_dir() and not _is_replaceable_png_folder(path):
            raise InputError(
                f"output folder {str(path)!r} holds files other than frame_*.png; "
                "expected a new, empty or earlier frames folder"
            )
    elif path.is_dir():
        raise InputError(f"output {str(path)!r} is a folder; expected a {kind} file path")
    return kind


def _even_sized(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even width and height: repeat the last row/column where one is odd."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def _write_mp4(frames: np.ndarray, target: Path, fps: int) -> None:
    import av  # only here: the other formats do not need PyAV

    frames = _even_sized(frames)
    with av.open(str(target), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": MP4_CRF}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _pil_frames(frames: np.ndarray) -> List["Image.Image"]:
    from PIL import Image

    return [Image.fromarray(frame) for frame in frames]


def _frame_duration_ms(fps: int) -> int:
    # GIF stores durations in 1/100 s, so gif playback rounds to the nearest 10 ms.
    return max(1, int(round(1000.0 / fps)))


def _write_gif(frames: np.ndarray, target: Path, fps: int) -> None:
    images = _pil_frames(frames)
    images[0].save(
        target,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=_frame_duration_ms(fps),
        loop=0,
        disposal=1,
    )


def _write_webp(frames: np.ndarray, target: Path, fps: int) -> None:
    images = _pil_frames(frames)
    images[0].save(
        target,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=_frame_duration_ms(fps),
        loop=0,
        quality=WEBP_QUALITY,
        method=4,
    )


def _render_png_folder(frames: np.ndarray, folder: Path) -> Path:
    try:
        tmp = make_temp_dir(folder, "tmp")
    except OSError as exc:
        raise output_error(folder, exc, "nothing was written") from None
    try:
        for i, image in enumerate(_pil_frames(frames)):
            image.save(tmp / PNG_PATTERN.format(i), format="PNG")
        apply_umask(tmp)
    except OSError as exc:
        remove_quietly(tmp)
        raise output_error(folder, exc, "nothing was written") from None
    except BaseException:
        remove_quietly(tmp)
        raise
    return tmp


def check_fps_for_output(kind: str, fps: int) -> None:
    """Refuse a frame rate the container cannot store (before any work is done)."""
    if kind == "gif" and fps > MAX_GIF_FPS:
        raise InputError(
            f"fps = {fps}: a GIF stores frame durations in 1/100 s, so expected "
            f"fps ≤ {MAX_GIF_FPS} for .gif (use .mp4 or .webp for more)"
        )


def render_frames(frames: np.ndarray, out: Union[str, os.PathLike], fps: int) -> Path:
    """Write (F, H, W, 3) frames, float in [0, 1] or uint8, in the format of ``out`` to a
    hidden temporary sibling of ``out`` and return it, unpublished (see ``save_frames``)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise InputError(f"frames of shape {frames.shape}: expected (F, H, W, 3) with F ≥ 1")
    if isinstance(fps, bool) or int(fps) != fps or fps < 1:
        raise InputError(f"fps = {fps!r}: expected an integer ≥ 1")
    kind = check_output_path(out)
    check_fps_for_output(kind, int(fps))
    path = output_path(out)
    if kind == "npy":
        floats = (
            frames.astype(np.float32) / np.float32(255.0)
            if frames.dtype == np.uint8
            else frames.astype(np.float32)
        )

        def write_npy(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, floats)

        return write_to_temp(path, write_npy, ".npy")
    u8 = np.ascontiguousarray(frames_to_uint8(frames))
    if kind == "png":
        return _render_png_folder(u8, path)
    writer = {"mp4": _write_mp4, "gif": _write_gif, "webp": _write_webp}[kind]
    return write_to_temp(path, lambda tmp: writer(u8, tmp, int(fps)), f".{kind}")


def publish_output(tmp: Path, out: Union[str, os.PathLike]) -> Path:
    """Move a rendered temporary (file or PNG folder) onto ``out``; returns the path."""
    path = output_path(out)
    if tmp.is_dir():
        replace_dir(tmp, path)
    else:
        publish(tmp, path)
    return path


def save_frames(frames: np.ndarray, out: Union[str, os.PathLike], fps: int) -> Path:
    """Write (F, H, W, 3) frames, float in [0, 1] or uint8, to ``out`` by its extension,
    replacing an earlier output there in one step.

    ``.npy`` keeps float32 frames (uint8 input is divided by 255); the other formats store
    uint8. ``fps`` sets the playback rate. Returns the written path.
    """
    return publish_output(render_frames(frames, out, fps), out)
