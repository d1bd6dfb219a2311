"""Classifier-free guidance with a per-frame linear scale (sgm ``LinearPredictionGuider``).

The U-Net graph of a CFG artifact runs the batch ``[uncond, cond]``; frame ``f`` of the
guided prediction is ``v_u + g_f·(v_c − v_u)`` with ``g = linspace(min, max, F)``.
"""

from __future__ import annotations

from typing import List

import numpy as np

from svdeploy.errors import InputError


def guidance_scales(min_scale: float, max_scale: float, num_frames: int) -> np.ndarray:
    """Per-frame guidance scales, float32 of shape (num_frames,), from ``min`` to ``max``."""
    if num_frames < 1:
        raise InputError(f"num_frames = {num_frames}: expected ≥ 1")
    if min_scale > max_scale:
        raise InputError(
            f"min_guidance_scale = {min_scale} is above max_guidance_scale = "
            f"{max_scale}: expected min ≤ max"
        )
    return np.linspace(min_scale, max_scale, num_frames, dtype=np.float64).astype(np.float32)


def apply_guidance(v_uncond: np.ndarray, v_cond: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Guided prediction per frame; ``v_*`` are (F, C, h, w), ``scales`` is (F,).

    When every scale is exactly 1 the result is ``v_cond`` itself (guidance off), bit for bit
    what a run without the unconditional branch gives.
    """
    if v_uncond.shape != v_cond.shape:
        raise InputError(
            f"apply_guidance: uncond shape {v_uncond.shape} differs from cond shape {v_cond.shape}"
        )
    if scales.shape != (v_cond.shape[0],):
        raise InputError(
            f"apply_guidance: {scales.shape[0] if scales.ndim else 'scalar'} scales for "
            f"{v_cond.shape[0]} frames; expected one per frame"
        )
    if np.all(scales == 1.0):
        return v_cond
    per_frame = scales.astype(np.float32).reshape(-1, *([1] * (v_cond.ndim - 1)))
    return (v_uncond + per_frame * (v_cond - v_uncond)).astype(np.float32)


def split_guidance_batch(v: np.ndarray, guidance_batch: int, num_frames: int) -> List[np.ndarray]:
    """Split the U-Net output (B·F, C, h, w), batch-major, into B arrays of (F, C, h, w)."""
    if v.shape[0] != guidance_batch * num_frames:
        raise InputError(
            f"U-Net output has {v.shape[0]} rows; expected guidance batch "
            f"{guidance_batch} × {num_frames} frames"
        )
    return [v[b * num_frames : (b + 1) * num_frames] for b in range(guidance_batch)]
