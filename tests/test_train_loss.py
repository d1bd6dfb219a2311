"""svd-train numerics: EDM loss and preconditioning against NumPy, the random draws, the
frozen conditioning, AdamW against torch, learning-rate schedule and loss scaling."""

from __future__ import annotations

import math
from typing import Sequence

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from svdeploy.config import load_model_config
from svdeploy.runtime.preprocess import CLIP_MEAN, CLIP_STD
from svdeploy.runtime.schedule import edm_preconditioning
from svdeploy.train.config import (
    DiffusionConfig,
    LossScaleConfig,
    LRSchedulerConfig,
    OptimizerConfig,
)
from svdeploy.train.loss import EDMLoss, draw_video, time_ids
from svdeploy.train.step import (
    AdamW,
    LossScaler,
    MicroBatch,
    StepRunner,
    clip_coefficient,
    is_temporal,
    learning_rate,
)

D, ADM = 6, 12  # context dim, adm_in (3 × 4)


def sinusoid(t: np.ndarray, dim: int, max_period: float = 10000.0) -> np.ndarray:
    """sgm timestep_embedding, written from its definition: [cos(t·f), sin(t·f)]."""
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half, dtype=np.float64) / half)
    args = t.astype(np.float64)[:, None] * freqs[None]
    return np.concatenate([np.cos(args), np.sin(args)], axis=1)


class StubUNet(nn.Cell):
    """A linear stand-in for the U-Net whose output depends on every input, so the loss
    only matches the reference when each input is assembled exactly right."""

    def __init__(self, a: np.ndarray, u: np.ndarray, p: np.ndarray, q: np.ndarray) -> None:
        super().__init__()
        self.a, self.u = Tensor(a.astype(np.float32)), Tensor(u.astype(np.float32))
        self.p, self.q = Tensor(p.astype(np.float32)), Tensor(q.astype(np.float32))
        self.frames_seen = []

    def construct(self, x, timesteps, context, y, num_frames):
        self.frames_seen.append(num_frames)
        n, c, h, w = x.shape
        out = ops.matmul(x.transpose(0, 2, 3, 1), self.a.T).transpose(0, 3, 1, 2)
        extra = (
            timesteps.reshape(n, 1) * self.u.reshape(1, -1)
            + ops.matmul(context.reshape(n, -1), self.p)
            + ops.matmul(y, self.q)
        )
        return out + extra.reshape(n, -1, 1, 1)


def stub_numpy(a, u, p, q, x, timesteps, context, y):
    out = np.einsum("nkhw,ck->nchw", x, a)
    extra = timesteps[:, None] * u[None] + context.reshape(len(x), -1) @ p + y @ q
    return out + extra[:, :, None, None]


def reference_loss(weights, x0, image_latent, context, ids, sigma, noise, keep, frames):
    """docs/NUMERICS.md §4, §6: the EDM loss, in float64 NumPy, frame-major inside each video."""
    s = np.repeat(sigma.astype(np.float64), frames)[:, None, None, None]
    noisy = x0 + s * noise
    c_in, c_skip = 1 / np.sqrt(s**2 + 1), 1 / (s**2 + 1)
    c_out, c_noise = -s / np.sqrt(s**2 + 1), 0.25 * np.log(s.ravel())
    image = np.repeat(image_latent * keep[:, None, None, None], frames, axis=0)
    ctx = np.repeat(context * keep[:, None, None], frames, axis=0)
    ids_f = np.repeat(ids, frames, axis=0)
    y = np.concatenate([sinusoid(ids_f[:, i], ADM // 3) for i in range(3)], axis=1)
    out = stub_numpy(*weights, np.concatenate([noisy * c_in, image], axis=1), c_noise, ctx, y)
    denoised = c_skip * noisy + c_out * out
    return float(np.mean((s**2 + 1) / s**2 * (denoised - x0) ** 2))


@pytest.fixture
def case():
    rng = np.random.default_rng(0)
    b, f, c, h, w = 2, 3, 4, 2, 3
    weights = (
        rng.normal(size=(4, 8)),
        rng.normal(size=4),
        rng.normal(size=(D, 4)),
        rng.normal(size=(ADM, 4)),
    )
    inputs = dict(
        x0=rng.normal(size=(b * f, c, h, w)),
        image_latent=rng.normal(size=(b, c, h, w)),
        context=rng.normal(size=(b, 1, D)),
        ids=np.array([[5.0, 127, 0.02], [11.0, 30, 0.3]]),
        sigma=np.array([0.3, 7.0]),
        noise=rng.normal(size=(b * f, c, h, w)),
    )
    return weights, inputs, f


def _ms_loss(weights, inputs, keep, frames):
    stub = StubUNet(*weights)
    loss_net = EDMLoss(stub, frames, ADM // 3)
    args = [
        inputs["x0"],
        inputs["image_latent"],
        inputs["context"],
        inputs["ids"],
        inputs["sigma"],
        inputs["noise"],
        keep,
    ]
    value = float(loss_net(*[Tensor(np.asarray(a, np.float32)) for a in args]).asnumpy())
    return value, stub


@pytest.mark.parametrize("keep", [(1.0, 1.0), (1.0, 0.0), (0.0, 0.0)])
def test_loss_matches_numpy_reference(case, keep):
    weights, inputs, frames = case
    keep = np.array(keep)
    value, stub = _ms_loss(weights, inputs, keep, frames)
    expected = reference_loss(
        weights,
        **{k: np.asarray(v, np.float64) for k, v in inputs.items()},
        keep=keep,
        frames=frames,
    )
    assert value == pytest.approx(expected, rel=2e-5)
    assert stub.frames_seen and set(stub.frames_seen) == {frames}


def test_loss_depends_on_what_dropout_zeroes(case):
    """Dropping the conditioning changes the loss (both the latent and the context reach the
    U-Net), and differently from dropping only one of them would."""
    weights, inputs, frames = case
    kept, _ = _ms_loss(weights, inputs, np.array([1.0, 1.0]), frames)
    dropped, _ = _ms_loss(weights, inputs, np.array([1.0, 0.0]), frames)
    assert abs(kept - dropped) > 1e-3 * abs(kept)
    no_context = dict(inputs, context=inputs["context"] * np.array([1.0, 0.0])[:, None, None])
    only_context, _ = _ms_loss(weights, no_context, np.array([1.0, 1.0]), frames)
    assert abs(only_context - dropped) > 1e-3 * abs(dropped)


def test_loss_uses_one_sigma_per_video(case):
    """Swapping the two videos' σ changes the loss: each σ belongs to its own frames."""
    weights, inputs, frames = case
    a, _ = _ms_loss(weights, inputs, np.ones(2), frames)
    b, _ = _ms_loss(weights, dict(inputs, sigma=inputs["sigma"][::-1].copy()), np.ones(2), frames)
    assert abs(a - b) > 1e-3 * abs(a)


@pytest.mark.parametrize("sigma", [0.002, 0.3, 1.0, 14.6, 700.0])
def test_preconditioning_equals_the_inference_schedule(sigma):
    """The loss's c_in, c_skip, c_out, c_noise are the runtime's (svdeploy.runtime.schedule):
    a zero U-Net output makes denoised = c_skip·noisy, and c_noise reaches the U-Net."""
    pre = edm_preconditioning(sigma)
    seen = {}

    class Probe(nn.Cell):
        def construct(self, x, timesteps, context, y, num_frames):
            seen["c_noise"] = timesteps.asnumpy()
            seen["x"] = x.asnumpy()
            return ops.zeros((x.shape[0], 4, x.shape[2], x.shape[3]), ms.float32)

    x0 = np.full((2, 4, 1, 1), 0.5, np.float32)
    noise = np.full((2, 4, 1, 1), 1.0, np.float32)
    loss = EDMLoss(Probe(), 2, ADM // 3)(
        Tensor(x0),
        Tensor(np.zeros((1, 4, 1, 1), np.float32)),
        Tensor(np.zeros((1, 1, D), np.float32)),
        Tensor(np.zeros((1, 3), np.float32)),
        Tensor(np.array([sigma], np.float32)),
        Tensor(noise),
        Tensor(np.ones(1, np.float32)),
    )
    noisy = 0.5 + sigma
    np.testing.assert_allclose(seen["c_noise"], pre.c_noise, rtol=1e-5)
    np.testing.assert_allclose(seen["x"][:, :4], noisy * pre.c_in, rtol=1e-5)
    expected = (sigma**2 + 1) / sigma**2 * (pre.c_skip * noisy - 0.5) ** 2
    assert float(loss.asnumpy()) == pytest.approx(expected, rel=1e-4)


# ---- draws ----------------------------------------------------------------------------------
def test_draws_are_reproducible_per_sample_and_distinct_between_samples():
    cfg = DiffusionConfig()
    a = draw_video(3, 17, cfg, (3, 4, 4), (2, 4, 2, 2))
    b = draw_video(3, 17, cfg, (3, 4, 4), (2, 4, 2, 2))
    c = draw_video(3, 18, cfg, (3, 4, 4), (2, 4, 2, 2))
    assert (a.sigma, a.cond_aug, a.keep) == (b.sigma, b.cond_aug, b.keep)
    np.testing.assert_array_equal(a.noise, b.noise)
    np.testing.assert_array_equal(a.image_noise, b.image_noise)
    assert a.sigma != c.sigma and not np.array_equal(a.noise, c.noise)
    assert a.noise.shape == (2, 4, 2, 2) and a.image_noise.shape == (3, 4, 4)
    assert a.noise.dtype == np.float32


def test_draw_distributions_follow_the_config():
    cfg = DiffusionConfig(
        p_mean=1.0, p_std=1.6, cond_aug_mean=-3.0, cond_aug_std=0.5, conditioning_dropout=0.25
    )
    draws = [draw_video(0, i, cfg, (1, 1, 1), (1, 1, 1, 1)) for i in range(4000)]
    log_sigma = np.log([d.sigma for d in draws])
    log_aug = np.log([d.cond_aug for d in draws])
    assert log_sigma.mean() == pytest.approx(1.0, abs=0.08)
    assert log_sigma.std() == pytest.approx(1.6, abs=0.08)
    assert log_aug.mean() == pytest.approx(-3.0, abs=0.03)
    assert log_aug.std() == pytest.approx(0.5, abs=0.03)
    assert np.mean([d.keep == 0.0 for d in draws]) == pytest.approx(0.25, abs=0.03)
    fixed = DiffusionConfig(cond_aug=0.02, p_std=0.0, p_mean=-1.0, conditioning_dropout=0.0)
    d = draw_video(0, 5, fixed, (1, 1, 1), (1, 1, 1, 1))
    assert d.cond_aug == 0.02 and d.sigma == pytest.approx(math.exp(-1.0)) and d.keep == 1.0
    # the other draws do not move when an option turns one of them off
    np.testing.assert_array_equal(
        d.noise, draw_video(0, 5, DiffusionConfig(), (1, 1, 1), (1, 1, 1, 1)).noise
    )


def test_time_ids_are_fps_minus_one_motion_and_aug():
    np.testing.assert_array_equal(
        time_ids(6.0, 127, 0.02), np.array([5.0, 127.0, 0.02], np.float32)
    )


# ---- frozen conditioning ----------------------------------------------------------------------
def test_conditioning_scales_frames_not_the_image_latent_and_uses_clip_preprocessing():
    from svdeploy.models import build_network
    from svdeploy.train.conditioning import FrozenConditioner
    from svdeploy.train.data import Sample

    cfg = load_model_config("tiny")
    ms.set_seed(0)
    vae, clip = build_network("vae_encoder", cfg), build_network("image_encoder", cfg)
    rng = np.random.default_rng(1)
    frames = rng.uniform(-1, 1, size=(2, 3, 16, 16)).astype(np.float32)
    sample = Sample(
        frames=frames,
        cond_image=frames[0].copy(),
        fps=12.0,
        motion_bucket_id=90,
        path="v.mp4",
        start=0,
        step=3,
        epoch=0,
        row=0,
    )
    draws = [draw_video(0, 0, DiffusionConfig(cond_aug=0.5), (3, 16, 16), (2, 4, 8, 8))]
    batch = FrozenConditioner(vae, clip, 0.18215).micro_batch([sample], draws)
    direct = vae(Tensor(frames)).asnumpy()
    np.testing.assert_allclose(batch.x0, direct * 0.18215, rtol=1e-4, atol=1e-6)
    augmented = frames[0] + 0.5 * draws[0].image_noise
    np.testing.assert_allclose(
        batch.image_latent, vae(Tensor(augmented[None])).asnumpy(), rtol=1e-4, atol=1e-6
    )
    # CLIP sees the clean frame: resized to 224 and normalised (checked on a constant image)
    grey = np.zeros_like(frames)
    grey_sample = Sample(
        frames=grey,
        cond_image=grey[0].copy(),
        fps=12.0,
        motion_bucket_id=90,
        path="v.mp4",
        start=0,
        step=3,
        epoch=0,
        row=0,
    )
    grey_batch = FrozenConditioner(vae, clip, 0.18215).micro_batch([grey_sample], draws)
    pixels = np.broadcast_to(
        ((0.5 - CLIP_MEAN) / CLIP_STD).astype(np.float32)[None, :, None, None], (1, 3, 224, 224)
    )
    np.testing.assert_allclose(
        grey_batch.context[:, 0],
        clip(Tensor(np.ascontiguousarray(pixels))).asnumpy(),
        rtol=1e-4,
        atol=1e-5,
    )
    np.testing.assert_array_equal(batch.time_ids, [[3.0, 90.0, 0.5]])  # clip fps 12/3 = 4
    assert batch.context.shape == (1, 1, cfg.unet.context_dim)


# ---- optimizer, schedule, scaling ------------------------------------------------------------
@pytest.fixture(params=["pynative", "graph"])
def execution_mode(request):
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE if request.param == "graph" else ms.PYNATIVE_MODE)
    yield request.param
    ms.set_context(mode=previous)


def test_adamw_matches_torch(execution_mode):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    shapes = [(3, 4), (4,), (2, 2, 3)]
    init = [rng.normal(size=s).astype(np.float32) for s in shapes]
    grads = [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(3)]
    lrs = [1e-2, 5e-3, 2e-3]
    params = ParameterTuple([Parameter(Tensor(a.copy()), name=f"p{i}") for i, a in enumerate(init)])
    opt = AdamW(params, [len(s) >= 2 for s in shapes], (0.9, 0.98), 1e-8, 0.1)
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    topt = torch.optim.AdamW(
        [
            {"params": [tparams[0], tparams[2]], "weight_decay": 0.1},
            {"params": [tparams[1]], "weight_decay": 0.0},
        ],
        lr=1e-2,
        betas=(0.9, 0.98),
        eps=1e-8,
    )
    for step_grads, lr in zip(grads, lrs):
        opt(tuple(Tensor(g) for g in step_grads), Tensor(np.float32(lr)))
        for group in topt.param_groups:
            group["lr"] = lr
        for p, g in zip(tparams, step_grads):
            p.grad = torch.tensor(g)
        topt.step()
    for p, t in zip(params, tparams):
        np.testing.assert_allclose(p.asnumpy(), t.detach().numpy(), rtol=1e-5, atol=1e-7)
    assert float(opt.step.asnumpy()[0]) == 3.0
    assert not np.allclose(params[1].asnumpy(), init[1])


def test_learning_rate_schedule():
    cfg = LRSchedulerConfig(name="cosine_decay", lr=1e-3, end_lr=1e-5, warmup_steps=4)
    values = [learning_rate(s, cfg, 14) for s in range(14)]
    assert values[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert values[4] == pytest.approx(1e-3)
    assert values[9] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))  # halfway through 10
    assert values[13] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 0.9)))
    assert all(a >= b for a, b in zip(values[4:], values[5:]))
    assert learning_rate(100, cfg, 14) == pytest.approx(1e-5)
    constant = LRSchedulerConfig(name="constant", lr=3e-4, warmup_steps=0)
    assert {learning_rate(s, constant, 10) for s in range(10)} == {3e-4}


def test_loss_scaler_follows_dynamic_loss_scale_rules():
    scaler = LossScaler.from_config(
        LossScaleConfig(loss_scale_value=8, scale_factor=2, scale_window=3)
    )
    scaler.update(True), scaler.update(True)
    assert scaler.scale == 8
    scaler.update(True)
    assert scaler.scale == 16
    scaler.update(False)
    assert scaler.scale == 8 and scaler.good_steps == 0
    for _ in range(5):
        scaler.update(False)
    assert scaler.scale == 1.0  # never below 1
    restored = LossScaler.from_config(LossScaleConfig())
    restored.load_state_dict(scaler.state_dict())
    assert restored.state_dict() == scaler.state_dict()


def test_clip_coefficient_is_torch_clip_grad_norm():
    assert clip_coefficient(0.5, 1.0) == 1.0
    assert clip_coefficient(4.0, 1.0) == pytest.approx(1.0 / (4.0 + 1e-6))
    assert clip_coefficient(4.0, None) == 1.0
    assert clip_coefficient(float("inf"), 1.0) == 1.0


def test_temporal_parameter_names():
    assert is_temporal("input_blocks.1.0.time_stack.in_layers.0.weight")
    assert is_temporal("middle_block.1.time_mixer.mix_factor")
    assert is_temporal("input_blocks.1.1.time_pos_embed.0.bias")
    assert not is_temporal("time_embed.0.weight")  # the timestep MLP is shared
    assert not is_temporal("input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight")


class ToyLoss(nn.Cell):
    """loss = σ·(w · x0[:2]): gradient σ·x0[:2], with EDMLoss's inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.w = Parameter(Tensor(np.array([1.0, -2.0], np.float32)), name="w")

    def construct(self, x0, image_latent, context, time_ids, sigma, noise, keep):
        return ops.reduce_sum(self.w * x0.reshape(-1)[:2]) * sigma[0]


def _toy_batch(x: Sequence[float], sigma: float = 1.0) -> MicroBatch:
    z = np.zeros((1, 1), np.float32)
    return MicroBatch(
        x0=np.array(x, np.float32).reshape(1, 2),
        image_latent=z,
        context=z,
        time_ids=z,
        sigma=np.array([sigma], np.float32),
        noise=z,
        keep=np.ones(1, np.float32),
    )


def test_step_runner_unscales_averages_and_skips_overflow(execution_mode):
    toy = ToyLoss()
    runner = StepRunner(
        toy,
        ParameterTuple([toy.w]),
        OptimizerConfig(weight_decay=0.0),
        clip_norm=1.0,
        drop_overflow_update=True,
    )
    # two micro-batches at loss scale 8: the step sees the mean unscaled gradient
    assert runner.micro_step(_toy_batch([2.0, 0.0]), 8.0) == pytest.approx(2.0)
    runner.micro_step(_toy_batch([4.0, 8.0]), 8.0)
    result = runner.step(lr=0.1, scale=8.0)
    assert result.finite and result.applied
    assert result.grad_norm == pytest.approx(5.0, rel=1e-6)  # |mean([2, 0], [4, 8])| = |[3, 4]|
    assert result.loss == pytest.approx((2.0 + (4.0 - 16.0)) / 2)
    np.testing.assert_allclose(toy.w.asnumpy(), [1.0 - 0.1, -2.0 - 0.1], rtol=1e-5)  # Adam step 1
    np.testing.assert_array_equal(runner.accum[0].asnumpy(), [0.0, 0.0])
    # an overflowing gradient: no update, accumulators cleared, reported as not finite
    before = toy.w.asnumpy().copy()
    runner.micro_step(_toy_batch([3e38, 1.0], sigma=10.0), 8.0)
    result = runner.step(lr=0.1, scale=8.0)
    assert not result.finite and not result.applied
    np.testing.assert_array_equal(toy.w.asnumpy(), before)
    np.testing.assert_array_equal(runner.accum[0].asnumpy(), [0.0, 0.0])
    assert float(runner.optimizer.step.asnumpy()[0]) == 1.0


def test_autoencoder_pixel_weights_single_out_the_object():
    """The autoencoder stage's reconstruction weights: 1 on the background (whatever its
    level), 1 + object_weight on the object, and all ones at object_weight 0 (plain MSE)."""
    from svdeploy.train.autoencoder import pixel_weights
    from svdeploy.train.shapes import coverage, draw_clip, render_clip

    clip = draw_clip(3, 5, 4)
    video = render_clip(clip)  # (F, H, W, 3) in [0, 1]
    frames = (video.transpose(0, 3, 1, 2) * 2 - 1).astype(np.float32)
    weights = pixel_weights(frames, 20.0)
    assert weights.shape == (4, 1, 64, 64)
    inside = coverage(clip.shape, clip.radius, clip.x0, clip.y0) >= 1.0  # fully covered, frame 0
    outside = coverage(clip.shape, clip.radius + 2, clip.x0, clip.y0) == 0.0
    np.testing.assert_allclose(weights[0, 0][inside], 21.0)
    np.testing.assert_allclose(weights[0, 0][outside], 1.0)
    assert np.all(pixel_weights(frames, 0.0) == 1.0)
