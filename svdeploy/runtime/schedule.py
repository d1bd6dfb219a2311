"""EDM / Karras noise schedule, v-prediction preconditioning and the Euler step
(docs/NUMERICS.md §3, §4).

Pure functions over numpy arrays and Python floats. They reproduce diffusers'
``EulerDiscreteScheduler`` with SVD's scheduler config (``use_karras_sigmas``, continuous
timesteps, ``v_prediction``), which equals sgm's ``EDMDiscretization`` + ``VScalingWithEDMcNoise``
+ ``EulerEDMSampler`` without churn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from svdeploy.errors import InputError

SIGMA_MIN = 0.002
SIGMA_MAX = 700.0
RHO = 7.0


def karras_sigmas(
    num_steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO
) -> np.ndarray:
    """The ``num_steps`` Karras noise levels from ``sigma_max`` down to ``sigma_min``, then 0.

    Returns float32 of shape (num_steps + 1,). Interpolation runs in float64 and is rounded
    once, like diffusers (numpy float64, then a float32 tensor).
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise InputError(f"num_inference_steps = {num_steps!r}: expected an integer ≥ 1")
    if not 0.0 < sigma_min < sigma_max:
        raise InputError(
            f"sigma_min = {sigma_min}, sigma_max = {sigma_max}: expected 0 < sigma_min < sigma_max"
        )
    ramp = np.linspace(0.0, 1.0, int(num_steps), dtype=np.float64)
    hi, lo = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return np.append(sigmas, 0.0).astype(np.float32)


@dataclass(frozen=True)
class Preconditioning:
    """EDM scalings of the v-prediction network at one noise level."""

    c_in: float  # input scale: 1/sqrt(sigma²+1)
    c_skip: float  # skip weight of the noisy latents in x0: 1/(sigma²+1)
    c_out: float  # weight of the network output in x0: -sigma/sqrt(sigma²+1)
    c_noise: float  # the U-Net's timestep input: 0.25·ln(sigma)


def edm_preconditioning(sigma: float) -> Preconditioning:
    """c_in, c_skip, c_out, c_noise for noise level ``sigma`` > 0 (sgm VScalingWithEDMcNoise).

    c_noise is rounded through float32 first because diffusers computes ``0.25·log(sigma)``
    on a float32 tensor; the others are exact float64 and are applied to float32 arrays.
    """
    sigma = float(sigma)
    if not sigma > 0.0 or not math.isfinite(sigma):
        raise InputError(f"sigma = {sigma}: expected a finite noise level > 0")
    s2p1 = sigma * sigma + 1.0
    c_noise = float(np.float32(0.25) * np.log(np.float32(sigma)))
    return Preconditioning(
        c_in=1.0 / math.sqrt(s2p1),
        c_skip=1.0 / s2p1,
        c_out=-sigma / math.sqrt(s2p1),
        c_noise=c_noise,
    )


def initial_noise_scale(sigmas: np.ndarray) -> float:
    """Standard deviation of the initial latents: sqrt(sigma_max² + 1) (diffusers'
    ``init_noise_sigma``; sgm scales by sqrt(1 + sigma_0²) as well)."""
    sigma_max = float(np.max(sigmas))
    return math.sqrt(sigma_max * sigma_max + 1.0)


def denoised_from_v(latents: np.ndarray, v: np.ndarray, sigma: float) -> np.ndarray:
    """x0 = c_skip·x + c_out·v: the clean-latent estimate of a v-prediction at ``sigma``."""
    pre = edm_preconditioning(sigma)
    return (v * np.float32(pre.c_out) + latents * np.float32(pre.c_skip)).astype(np.float32)


def euler_step(latents: np.ndarray, v: np.ndarray, sigma: float, sigma_next: float) -> np.ndarray:
    """One Euler step of the probability-flow ODE from ``sigma`` to ``sigma_next``.

    ``latents`` and ``v`` (the guided network output) share one shape. With sigma_next = 0
    the result is x0 up to rounding (the last step lands on the denoised estimate).
    """
    if latents.shape != v.shape:
        raise InputError(
            f"euler_step: latents shape {latents.shape} differs from the network "
            f"output shape {v.shape}"
        )
    x0 = denoised_from_v(latents, v, sigma)
    slope = (latents - x0) / np.float32(sigma)
    return (latents + slope * (np.float32(sigma_next) - np.float32(sigma))).astype(np.float32)
