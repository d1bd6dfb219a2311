"""Schedule, preconditioning, Euler step and guidance against diffusers' implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from svdeploy.errors import InputError
from svdeploy.runtime import (
    apply_guidance,
    denoised_from_v,
    edm_preconditioning,
    euler_step,
    guidance_scales,
    initial_noise_scale,
    karras_sigmas,
)
from svdref.diffusers_tiny import SVD_SCHEDULER_CONFIG

torch.set_num_threads(2)


def svd_scheduler(steps: int) -> EulerDiscreteScheduler:
    scheduler = EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(steps)
    return scheduler


def test_karras_sigmas_reference_values():
    np.testing.assert_allclose(karras_sigmas(3), [700.0, 15.589968, 0.002, 0.0], rtol=1e-6)
    np.testing.assert_allclose(
        karras_sigmas(4), [700.0, 70.54084, 2.2691164, 0.002, 0.0], rtol=1e-6
    )
    assert karras_sigmas(3).dtype == np.float32
    np.testing.assert_array_equal(karras_sigmas(1), np.array([700.0, 0.0], np.float32))


@pytest.mark.parametrize("steps", [2, 3, 4, 14, 25, 50])
def test_schedule_equals_diffusers_euler_scheduler(steps):
    scheduler = svd_scheduler(steps)
    sigmas = karras_sigmas(steps)
    np.testing.assert_allclose(sigmas, scheduler.sigmas.numpy(), rtol=2e-7, atol=0)
    c_noise = np.array([edm_preconditioning(s).c_noise for s in sigmas[:-1]], np.float32)
    np.testing.assert_allclose(c_noise, scheduler.timesteps.numpy(), rtol=1e-6, atol=1e-7)
    assert initial_noise_scale(sigmas) == pytest.approx(float(scheduler.init_noise_sigma), rel=1e-7)


def test_preconditioning_formulas():
    pre = edm_preconditioning(2.0)
    assert pre.c_in == pytest.approx(1 / np.sqrt(5.0))
    assert pre.c_skip == pytest.approx(1 / 5.0)
    assert pre.c_out == pytest.approx(-2.0 / np.sqrt(5.0))
    assert pre.c_noise == pytest.approx(0.25 * np.log(2.0), rel=1e-6)
    with pytest.raises(InputError, match="sigma = 0.0"):
        edm_preconditioning(0.0)


def test_c_in_equals_scale_model_input():
    scheduler = svd_scheduler(4)
    sample = torch.from_numpy(
        np.random.default_rng(0).standard_normal((2, 4, 3, 3)).astype(np.float32)
    )
    for i, t in enumerate(scheduler.timesteps):
        ours = sample.numpy() * np.float32(edm_preconditioning(float(scheduler.sigmas[i])).c_in)
        theirs = scheduler.scale_model_input(sample, t).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=2e-7, atol=1e-9)
        scheduler._step_index += 1  # scale_model_input alone does not advance the scheduler


def test_euler_steps_equal_diffusers_scheduler_step():
    steps = 5
    scheduler = svd_scheduler(steps)
    rng = np.random.default_rng(1)
    sigmas = karras_sigmas(steps)
    ours = rng.standard_normal((3, 4, 5, 5)).astype(np.float32) * np.float32(
        initial_noise_scale(sigmas)
    )
    theirs = torch.from_numpy(ours.copy())
    worst = 0.0
    for i, t in enumerate(scheduler.timesteps):
        v = rng.standard_normal(ours.shape).astype(np.float32)
        ours = euler_step(ours, v, float(sigmas[i]), float(sigmas[i + 1]))
        theirs = scheduler.step(torch.from_numpy(v), t, theirs).prev_sample
        scale = max(1.0, float(np.abs(ours).max()))
        worst = max(worst, float(np.abs(ours - theirs.numpy()).max()) / scale)
    assert worst < 1e-6, worst


def test_last_step_lands_on_denoised_estimate():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    v = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(
        euler_step(x, v, 0.002, 0.0), denoised_from_v(x, v, 0.002), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(InputError, match="differs from the network output shape"):
        euler_step(x, v[:1], 1.0, 0.5)


def test_guidance_scales_equal_torch_linspace():
    for lo, hi, frames in ((1.0, 3.0, 14), (1.0, 2.5, 25), (2.0, 2.0, 4), (0.5, 1.5, 1)):
        np.testing.assert_allclose(
            guidance_scales(lo, hi, frames),
            torch.linspace(lo, hi, frames).numpy(),
            rtol=1e-7,
            atol=1e-7,
        )
    with pytest.raises(
        InputError, match="min_guidance_scale = 3.0 is above max_guidance_scale = 1.0"
    ):
        guidance_scales(3.0, 1.0, 4)


def test_apply_guidance_per_frame():
    rng = np.random.default_rng(3)
    v_u = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    v_c = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    scales = guidance_scales(1.0, 2.5, 4)
    guided = apply_guidance(v_u, v_c, scales)
    for f in range(4):
        np.testing.assert_allclose(guided[f], v_u[f] + scales[f] * (v_c[f] - v_u[f]), rtol=1e-6)
    # frame 0 has scale 1: the conditional prediction (up to rounding)
    np.testing.assert_allclose(guided[0], v_c[0], rtol=1e-6, atol=1e-6)
    # all scales 1: exactly the conditional branch
    assert apply_guidance(v_u, v_c, np.ones(4, np.float32)) is v_c
    with pytest.raises(InputError, match="one per frame"):
        apply_guidance(v_u, v_c, scales[:3])


def test_invalid_step_counts():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="num_inference_steps"):
            karras_sigmas(bad)
