"""NumPy formulas shared by the runtime and training, below both (a core module).

The CLIP branch of the conditioning (docs/NUMERICS.md §2.1): the H×W image in [0, 1] is resized
to 224×224 with diffusers' antialiased bicubic and CLIP-normalised. The resize is written as two
small matrices (one per axis) that fold the Gaussian blur with its reflect padding and the
bicubic interpolation together. ``svdeploy.runtime.preprocess`` re-exports every name, and
training (``svdeploy.train.conditioning``) preprocesses exactly as inference does by calling
the same code. NumPy only: no framework, and of svdeploy only the errors.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from svdeploy.errors import InputError

CLIP_SIZE = 224
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float64)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float64)
BICUBIC_A = -0.75  # PyTorch's bicubic convolution constant (Keys' cubic with A = -0.75)


# ---------------------------------------------------------------------------------------------
# CLIP branch: antialiased bicubic resize + normalisation
# ---------------------------------------------------------------------------------------------
def _reflect_index(index: np.ndarray, length: int) -> np.ndarray:
    """Mirror indices into 0..length-1 without repeating the edge sample ('reflect' padding)."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    folded = np.mod(index, period)
    return np.where(folded < length, folded, period - folded)


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps centred on the middle tap (half-pixel shift if even)."""
    offsets = np.arange(size, dtype=np.float64) - size // 2
    if size % 2 == 0:
        offsets = offsets + 0.5
    taps = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return taps / taps.sum()


def blur_matrix(length: int, sigma: float, size: int) -> np.ndarray:
    """(length, length) operator of a Gaussian blur with reflect padding along one axis."""
    taps = gaussian_kernel(size, sigma)
    front = (size - 1) // 2
    rows = np.arange(length)[:, None]
    sources = _reflect_index(rows - front + np.arange(size)[None, :], length)
    matrix = np.zeros((length, length), np.float64)
    np.add.at(matrix, (np.broadcast_to(rows, sources.shape), sources), taps[None, :])
    return matrix


def _cubic_weights(t: np.ndarray, a: float = BICUBIC_A) -> np.ndarray:
    """Keys cubic convolution weights of the 4 neighbours at offsets -1, 0, 1, 2 → (n, 4)."""

    def near(x: np.ndarray) -> np.ndarray:  # |x| ≤ 1
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x: np.ndarray) -> np.ndarray:  # 1 < |x| < 2
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    return np.stack([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)], axis=-1)


def bicubic_matrix(in_length: int, out_length: int) -> np.ndarray:
    """(out, in) operator of bicubic interpolation with align_corners=True along one axis.

    Source positions are computed in float32 as PyTorch does for float32 tensors; border
    neighbours are clamped to the edge sample.
    """
    if out_length > 1:
        scale = np.float32(in_length - 1) / np.float32(out_length - 1)
    else:
        scale = np.float32(0.0)
    source = np.arange(out_length, dtype=np.float32) * scale
    base = np.floor(source)
    weights = _cubic_weights((source - base).astype(np.float64))
    base = base.astype(np.int64)
    matrix = np.zeros((out_length, in_length), np.float64)
    rows = np.arange(out_length)
    for k in range(4):
        cols = np.clip(base - 1 + k, 0, in_length - 1)
        np.add.at(matrix, (rows, cols), weights[:, k])
    return matrix


def antialias_sigma_and_size(in_length: int, out_length: int) -> Tuple[float, int]:
    """Blur sigma and (odd) kernel size for resizing one axis, as diffusers chooses them."""
    sigma = max((in_length / out_length - 1.0) / 2.0, 0.001)
    size = int(max(2.0 * 2.0 * sigma, 3.0))
    if size % 2 == 0:
        size += 1
    return sigma, size


def resize_axis_matrix(in_length: int, out_length: int) -> np.ndarray:
    """Blur-then-bicubic operator (out, in) for one axis."""
    sigma, size = antialias_sigma_and_size(in_length, out_length)
    return bicubic_matrix(in_length, out_length) @ blur_matrix(in_length, sigma, size)


def resize_antialiased(x: np.ndarray, size: Tuple[int, int] = (CLIP_SIZE, CLIP_SIZE)) -> np.ndarray:
    """Resize (N, C, H, W) to (N, C, *size) like diffusers' ``_resize_with_antialiasing``:
    a separable Gaussian blur (sigma from the scale factor, reflect padding), then bicubic
    A = -0.75 with align_corners=True. Computed in float64, returned as float64."""
    if x.ndim != 4:
        raise InputError(f"resize_antialiased: input of shape {x.shape}: expected (N, C, H, W)")
    rows = resize_axis_matrix(x.shape[-2], size[0])
    cols = resize_axis_matrix(x.shape[-1], size[1])
    return np.einsum("oh,nchw,pw->ncop", rows, x.astype(np.float64), cols, optimize=True)


def clip_pixel_values(pixels: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] → the image encoder's (1, 3, 224, 224) CLIP-normalised input.

    The resize works on [-1, 1] values, as in sgm and diffusers."""
    resized = resize_antialiased(pixels.astype(np.float64) * 2.0 - 1.0)
    x01 = (resized + 1.0) / 2.0
    normalised = (x01 - CLIP_MEAN[None, :, None, None]) / CLIP_STD[None, :, None, None]
    return np.ascontiguousarray(normalised, dtype=np.float32)
