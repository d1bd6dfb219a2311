"""Inputs and files of the svd-bench suites: the deterministic picture, svd-bench's atomic
JSON/text/npz writers, number formatting."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from svdeploy.fsutil import atomic_write_json, atomic_write_text, atomic_write_with


# ---------------------------------------------------------------------------------------------
# Inputs and files
# ---------------------------------------------------------------------------------------------
def demo_image(height: int, width: int) -> np.ndarray:
    """A deterministic RGB picture (uint8 H×W×3) with ramps, a wave and shapes."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = xx / max(width - 1, 1)
    img[..., 1] = yy / max(height - 1, 1)
    img[..., 2] = 0.5 + 0.5 * np.sin(xx / width * 2 * np.pi) * np.cos(yy / height * 2 * np.pi)
    img[height // 8 : height // 8 + height // 4, width // 8 : width // 8 + width // 4] = (
        1.0,
        1.0,
        0.0,
    )
    disc = (yy - 0.65 * height) ** 2 + (xx - 0.6 * width) ** 2 < (0.18 * min(height, width)) ** 2
    img[disc] = (0.1, 0.2, 0.9)
    return (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_json"):
        return value.to_json()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# svd-bench's writers: svdeploy.fsutil's atomic writes, creating the folder; its JSON also
# takes NumPy scalars, paths and objects with to_json, and keeps NaN (a failed measurement)
write_text_atomic = functools.partial(atomic_write_text, parents=True)
write_json_atomic = functools.partial(
    atomic_write_json, default=_json_default, allow_nan=True, parents=True
)


def save_npz_atomic(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    atomic_write_with(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz", parents=True)


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def fmt_seconds(s: Optional[float]) -> str:
    if s is None or s != s:  # NaN
        return "-"
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s * 1e3:.1f} ms"


__all__ = [
    "demo_image",
    "write_json_atomic",
    "write_text_atomic",
    "save_npz_atomic",
    "fmt_bytes",
    "fmt_seconds",
]
