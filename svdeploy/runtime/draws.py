"""The checks of a run's random inputs and clip count, shared by the single run
(``pipeline``), chained clips (``chain``), batches (``batch``) and the CLI (``run``).

A leaf module (NumPy and the error types only), so that ``chain`` and ``batch`` read these
without reaching into ``pipeline``, and ``pipeline`` needs ``chain`` only when it hands a
chained run over to it.
"""

from __future__ import annotations

import secrets
from typing import Any, Tuple

import numpy as np

from svdeploy.errors import InputError

# The noise draws are standard normal: |x| > 100 has probability ~0, so larger values are
# a wrong file (e.g. unnormalised data), not noise.
MAX_NOISE_MAGNITUDE = 100.0


def resolve_seed(seed: Any) -> int:
    """``seed`` checked, or a fresh 32-bit one for None (recorded with the result)."""
    if seed is None:
        return secrets.randbits(32)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed = {seed!r}: expected a non-negative integer or None")
    return int(seed)


def noise_array(name: str, value: Any, shape: Tuple[int, ...]) -> np.ndarray:
    """A caller's noise array in place of a draw: ``shape``, floating, finite, plausibly
    standard normal; float32, contiguous."""
    array = np.asarray(value)
    if tuple(array.shape) != tuple(shape):
        raise InputError(f"{name} has shape {tuple(array.shape)}: expected {tuple(shape)}")
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{name} has dtype {array.dtype}: expected float32 standard-normal values")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or Inf: expected finite standard-normal values")
    if array.size and float(np.max(np.abs(array))) > MAX_NOISE_MAGNITUDE:
        raise InputError(
            f"{name} holds values up to {float(np.max(np.abs(array))):.4g} in "
            f"magnitude: expected standard-normal noise (|x| ≤ {MAX_NOISE_MAGNITUDE:g})"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def check_clips(clips: Any) -> int:
    if isinstance(clips, bool) or not isinstance(clips, (int, np.integer)) or clips < 1:
        raise InputError(f"clips = {clips!r}: expected an integer ≥ 1")
    return int(clips)
