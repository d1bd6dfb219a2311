"""Chunked VAE decoding over the artifact's fixed chunk graphs, with optional overlap.

The temporal VAE decoder mixes frames inside one call, so a frame decoded in one chunk sees
other neighbours than it would in an all-frames decode; where two chunks meet, the video can
jump (a seam). ``decode_overlap = O`` slides windows of the exported chunk size K with stride
K − O and blends each overlap linearly (the earlier window fades out while the later one fades
in), so no frame switches abruptly from one context to another.

Windows always have the graph's K frames: when the last stride would run past the end, the
last window is aligned to the end instead (it then overlaps its neighbour by more than O; its
fade-in spans that whole overlap). Without overlap and when the frame count is a multiple of
K plus the artifact's tail, the plain chunks (and the tail graph) are used, exactly as before.

Cost: ``decode_calls(T, K, O)`` graph calls of K frames, against ⌈T/K⌉ without overlap
(2-frame chunks, overlap 1: T − 1 calls instead of T/2, about twice the decode time; peak
memory is unchanged: one chunk at a time plus the output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np

from svdeploy.contract import TAIL_GRAPH
from svdeploy.errors import InputError

DecodeFn = Callable[[str, np.ndarray], np.ndarray]  # (graph name, z chunk) → frames chunk


@dataclass(frozen=True)
class Window:
    start: int
    stop: int
    graph: str  # vae_decoder or vae_decoder_tail


def check_overlap(overlap: object, chunk: int) -> int:
    """``overlap`` as an int in 0..chunk−1, else an InputError naming both."""
    if (
        isinstance(overlap, bool)
        or not isinstance(overlap, (int, np.integer))
        or not 0 <= overlap < chunk
    ):
        raise InputError(
            f"decode_overlap = {overlap!r}: expected an integer in 0..{chunk - 1} "
            f"(below the artifact's decode chunk of {chunk} frames)"
        )
    return int(overlap)


def decode_windows(
    total: int, chunk: int, overlap: int = 0, tail: Optional[int] = None
) -> List[Window]:
    """The decode calls for ``total`` frames with chunk graphs of ``chunk`` frames (and a tail
    graph of ``tail`` frames when the artifact has one), overlapping by ``overlap``."""
    overlap = check_overlap(overlap, chunk)
    if total < chunk:
        raise InputError(
            f"{total} frames cannot be decoded with the artifact's {chunk}-frame "
            "decoder graph: expected at least one full chunk"
        )
    remainder = total % chunk
    if overlap == 0 and (remainder == 0 or remainder == tail):
        windows = [Window(b, b + chunk, "vae_decoder") for b in range(0, total - remainder, chunk)]
        if remainder:
            windows.append(Window(total - remainder, total, TAIL_GRAPH))
        return windows
    stride = chunk - overlap
    starts = list(range(0, total - chunk, stride)) + [total - chunk]
    return [Window(s, s + chunk, "vae_decoder") for s in dict.fromkeys(starts)]


def decode_calls(total: int, chunk: int, overlap: int = 0, tail: Optional[int] = None) -> int:
    return len(decode_windows(total, chunk, overlap, tail))


def blend_weights(windows: List[Window], overlap: int) -> List[np.ndarray]:
    """Per window, one weight per frame. A frame shared with the previous window ramps in
    (1/(n+1) … n/(n+1) over the n shared frames), one shared with the next ramps out; with
    ``overlap`` 0 a later window only fills frames no earlier window covered. The caller
    divides by the per-frame sum, so every frame is a convex combination."""
    weights = []
    for i, win in enumerate(windows):
        size = win.stop - win.start
        w = np.ones(size, np.float64)
        if i > 0:
            shared = max(windows[i - 1].stop - win.start, 0)
            w[:shared] = (
                0.0
                if overlap == 0
                else np.minimum(w[:shared], np.arange(1, shared + 1) / (shared + 1))
            )
        if i + 1 < len(windows) and overlap > 0:
            shared = max(win.stop - windows[i + 1].start, 0)
            if shared:
                w[size - shared :] = np.minimum(
                    w[size - shared :], np.arange(shared, 0, -1) / (shared + 1)
                )
        weights.append(w)
    return weights


def decode_blended(
    z: np.ndarray,
    windows: List[Window],
    overlap: int,
    decode: DecodeFn,
    on_window: Callable[[], None] = lambda: None,
) -> np.ndarray:
    """Decode ``z`` (T, C, h, w; already divided by the scaling factor) window by window and
    blend: (T, 3, H, W) float32. Only one window's frames are held besides the output."""
    out: Optional[np.ndarray] = None
    total_weight = np.zeros(z.shape[0], np.float64)
    for win, weight in zip(windows, blend_weights(windows, overlap)):
        frames = decode(win.graph, np.ascontiguousarray(z[win.start : win.stop]))
        if out is None:
            out = np.zeros((z.shape[0],) + frames.shape[1:], np.float32)
        out[win.start : win.stop] += frames * weight.astype(np.float32)[:, None, None, None]
        total_weight[win.start : win.stop] += weight
        on_window()
    assert out is not None and np.all(total_weight > 0), "decode windows must cover every frame"
    return out / total_weight.astype(np.float32)[:, None, None, None]


def border_flicker(frames: np.ndarray, windows: List[Window]) -> dict:
    """Mean absolute change between consecutive frames across a chunk border (the pair
    (b−1, b) where a window without overlap starts) against inside chunks. A seam shows as a
    border figure well above the inside one. ``frames``: (T, ...) float."""
    steps = np.abs(np.diff(frames.astype(np.float64), axis=0)).reshape(frames.shape[0] - 1, -1)
    per_pair = steps.mean(axis=1)
    borders = sorted({w.start for w in windows if w.start > 0})
    border_pairs = [b - 1 for b in borders]
    inside = [p for p in range(per_pair.size) if p not in border_pairs]
    return {
        "border": float(per_pair[border_pairs].mean()) if border_pairs else None,
        "inside": float(per_pair[inside].mean()) if inside else None,
        "border_pairs": border_pairs,
    }


__all__ = [
    "Window",
    "check_overlap",
    "decode_windows",
    "decode_calls",
    "blend_weights",
    "decode_blended",
    "border_flicker",
]
