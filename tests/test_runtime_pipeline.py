"""VideoPipeline behaviour over injected NumPy graphs: parameters, defaults, noise, batching,
guidance settling, validation, NaN detection, progress. No graph files are needed."""

from __future__ import annotations

import numpy as np
import pytest

from svdeploy.errors import BackendError, InputError, ManifestError
from svdeploy.manifest import TensorSpec
from svdeploy.runtime import VideoPipeline, edm_preconditioning, karras_sigmas
from svdref.diffusers_tiny import make_image
from svdref.fake_artifact import (
    DEFAULTS,
    LH,
    LW,
    NUMPY_GRAPHS,
    STEPS,
    B,
    C,
    D,
    F,
    H,
    W,
    numpy_manifest,
    numpy_pipeline,
)

IMAGE = make_image(H, W)


def recording_unet(log: list):
    def unet(inputs):
        log.append({k: v.copy() for k, v in inputs.items()})
        return NUMPY_GRAPHS["unet"](inputs)

    return unet


def test_call_returns_the_rounded_frames_of_generate():
    pipe = numpy_pipeline()
    result = pipe.generate(IMAGE, seed=1, progress=False)
    frames = pipe(IMAGE, seed=1, progress=False)
    assert frames.dtype == np.uint8 and frames.shape == (F, H, W, 3)
    assert (
        result.frames.dtype == np.float32
        and 0.0 <= result.frames.min() <= result.frames.max() <= 1.0
    )
    np.testing.assert_array_equal(frames, np.round(result.frames * 255).astype(np.uint8))


def test_defaults_come_from_the_manifest():
    pipe = numpy_pipeline(
        defaults=dict(DEFAULTS, fps=12, motion_bucket_id=30, num_inference_steps=2)
    )
    result = pipe.generate(IMAGE, seed=0, progress=False)
    assert (result.params.fps, result.params.motion_bucket_id) == (12, 30)
    assert result.params.num_inference_steps == 2
    assert result.params.max_guidance_scale == DEFAULTS["max_guidance_scale"]
    assert result.timings["graphs"]["unet"]["calls"] == 2
    assert len(result.timings["per_step_s"]) == 2
    override = pipe.generate(IMAGE, seed=0, fps=9, progress=False)
    assert override.params.fps == 9 and override.params.motion_bucket_id == 30
    # keys the manifest lacks fall back to svdeploy's sampling defaults
    bare = numpy_pipeline(defaults={}).generate(
        IMAGE, seed=0, num_inference_steps=1, progress=False
    )
    assert (bare.params.fps, bare.params.motion_bucket_id, bare.params.noise_aug_strength) == (
        7,
        127,
        0.02,
    )


def test_unet_inputs_follow_the_graph_contract():
    log: list = []
    pipe = numpy_pipeline(unet=recording_unet(log))
    pipe.generate(
        IMAGE, seed=4, fps=8, motion_bucket_id=100, noise_aug_strength=0.05, progress=False
    )
    assert len(log) == STEPS
    first = log[0]
    sigmas = karras_sigmas(STEPS)
    assert first["c_noise"][0] == pytest.approx(0.25 * np.log(700.0), rel=1e-6)
    assert log[-1]["c_noise"][0] == pytest.approx(edm_preconditioning(float(sigmas[-2])).c_noise)
    np.testing.assert_array_equal(first["time_ids"], np.array([[7, 100, 0.05]] * 2, np.float32))
    context = first["context"]
    assert context.shape == (B, 1, D) and not context[0].any() and context[1].any()
    sample = first["sample"]
    # rows b·F + f; channels [noisy latents (C), image latent (C)]
    assert not sample[:F, C:].any()  # uncond: zero image latent
    image_latent = sample[F:, C:]
    assert image_latent.any() and all(
        np.array_equal(image_latent[0], image_latent[f]) for f in range(F)
    )
    np.testing.assert_array_equal(sample[:F, :C], sample[F:, :C])  # same noisy latents twice
    # initial latents: standard normal draw · sqrt(σmax²+1) · c_in
    rng = np.random.default_rng(4)
    rng.standard_normal((1, 3, H, W), dtype=np.float32)
    noise = rng.standard_normal((1, F, C, LH, LW), dtype=np.float32)[0]
    expected = (
        noise * np.float32(np.sqrt(700.0**2 + 1)) * np.float32(edm_preconditioning(700.0).c_in)
    )
    np.testing.assert_allclose(sample[:F, :C], expected, rtol=1e-6, atol=1e-6)


def test_given_noise_replaces_the_seeded_draws():
    pipe = numpy_pipeline()
    seeded = pipe.generate(IMAGE, seed=5, progress=False)
    rng = np.random.default_rng(5)
    image_noise = rng.standard_normal((1, 3, H, W), dtype=np.float32)
    latents = rng.standard_normal((1, F, C, LH, LW), dtype=np.float32)
    given = pipe.generate(IMAGE, image_noise=image_noise, latents=latents, progress=False)
    np.testing.assert_array_equal(seeded.frames, given.frames)
    assert given.seed is None

    # only image_noise given: the latents are still the seed's second draw
    log_a: list = []
    log_b: list = []
    numpy_pipeline(unet=recording_unet(log_a)).generate(IMAGE, seed=5, progress=False)
    numpy_pipeline(unet=recording_unet(log_b)).generate(
        IMAGE, seed=5, image_noise=np.zeros((1, 3, H, W), np.float32), progress=False
    )
    np.testing.assert_array_equal(log_a[0]["sample"][:, :C], log_b[0]["sample"][:, :C])
    assert not np.array_equal(log_a[0]["sample"][:, C:], log_b[0]["sample"][:, C:])


def test_random_seed_is_recorded_and_reproduces_the_run():
    pipe = numpy_pipeline()
    first = pipe.generate(IMAGE, progress=False)
    assert isinstance(first.seed, int)
    again = pipe.generate(IMAGE, seed=first.seed, progress=False)
    np.testing.assert_array_equal(first.frames, again.frames)


def test_artifact_without_cfg():
    log: list = []
    pipe = numpy_pipeline(cfg=False, unet=recording_unet(log))
    # the CFG default of 3.0 in the manifest does not apply: guidance is off
    result = pipe.generate(IMAGE, seed=0, progress=False)
    assert not result.params.guidance
    assert (result.params.min_guidance_scale, result.params.max_guidance_scale) == (1.0, 1.0)
    assert log[0]["sample"].shape == (F, 2 * C, LH, LW) and log[0]["context"].shape == (1, 1, D)
    pipe.generate(IMAGE, seed=0, max_guidance_scale=1.0, progress=False)
    with pytest.raises(
        InputError,
        match=r"max_guidance_scale = 2.5: this artifact was exported "
        r"without classifier-free guidance \(guidance_batch 1\)",
    ):
        pipe.generate(IMAGE, seed=0, max_guidance_scale=2.5, progress=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_inference_steps=0), r"num_inference_steps = 0: expected an integer ≥ 1"),
        (dict(motion_bucket_id=256), r"motion_bucket_id = 256: expected an integer in 0..255"),
        (dict(motion_bucket_id=-1), r"motion_bucket_id = -1: expected an integer in 0..255"),
        (dict(fps=0), r"fps = 0: expected an integer in 1\.\.120"),
        (dict(fps=7.5), r"fps = 7.5: expected an integer in 1\.\.120"),
        (
            dict(noise_aug_strength=-0.1),
            r"noise_aug_strength = -0.1: expected a finite number in 0.0\.\.100.0",
        ),
        (
            dict(min_guidance_scale=3.0, max_guidance_scale=2.0),
            r"min_guidance_scale = 3.0 is above max_guidance_scale = 2.0",
        ),
        (dict(max_guidance_scale=float("nan")), r"max_guidance_scale = nan"),
        (dict(seed=-3), r"seed = -3: expected a non-negative integer"),
        (
            dict(image_noise=np.zeros((1, 3, 8, 8), np.float32)),
            r"image_noise has shape \(1, 3, 8, 8\): expected \(1, 3, 16, 16\)",
        ),
        (
            dict(latents=np.zeros((1, 4, 4, 8, 8), np.float32)),
            r"latents has shape \(1, 4, 4, 8, 8\): expected \(1, 5, 4, 8, 8\)",
        ),
        (
            dict(latents=np.full((1, 5, 4, 8, 8), np.inf, np.float32)),
            r"latents contains NaN or Inf",
        ),
    ],
)
def test_invalid_parameters_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        numpy_pipeline().generate(IMAGE, progress=False, **kwargs)


def test_invalid_manifest_defaults_are_named():
    with pytest.raises(InputError, match=r"motion_bucket_id = 300 \(the artifact's default\)"):
        numpy_pipeline(defaults=dict(DEFAULTS, motion_bucket_id=300)).generate(
            IMAGE, progress=False
        )


def test_nan_in_the_latents_stops_with_the_step_number():
    calls = {"n": 0}

    def broken_unet(inputs):
        calls["n"] += 1
        out = NUMPY_GRAPHS["unet"](inputs)
        if calls["n"] == 2:
            out["v"][3, 1, 2, 2] = np.nan
        return out

    with pytest.raises(BackendError, match=r"NaN or Inf after step 2 of 3"):
        numpy_pipeline(unet=broken_unet).generate(IMAGE, seed=0, progress=False)
    assert calls["n"] == 2  # stopped right there


def test_manifest_that_breaks_the_contract_is_refused():
    manifest = numpy_manifest()
    unet = manifest.graph("unet", "onnx")
    unet.inputs[0] = TensorSpec("sample", (B * F, 2 * C, LH, LW + 1))
    with pytest.raises(ManifestError, match=r"manifest graph 'unet' declares inputs"):
        VideoPipeline(manifest, NUMPY_GRAPHS)
    renamed = numpy_manifest()
    renamed.graph("vae_decoder", "onnx").outputs[0] = TensorSpec("image", (2, 3, H, W))
    with pytest.raises(ManifestError, match=r"'vae_decoder'"):
        VideoPipeline(renamed, NUMPY_GRAPHS)
    missing = {k: v for k, v in NUMPY_GRAPHS.items() if k != "vae_decoder_tail"}
    with pytest.raises(ManifestError, match=r"no callable given for graph 'vae_decoder_tail'"):
        VideoPipeline(numpy_manifest(), missing)


def test_graph_returning_a_wrong_shape_is_reported():
    def short_decoder(inputs):
        return {"frames": NUMPY_GRAPHS["vae_decoder"](inputs)["frames"][:1]}

    with pytest.raises(
        BackendError,
        match=r"graph 'vae_decoder' output 'frames': got float32 "
        r"\(1, 3, 16, 16\), the manifest records float32 \(2, 3, 16, 16\)",
    ):
        numpy_pipeline(vae_decoder=short_decoder).generate(IMAGE, seed=0, progress=False)


def test_other_image_sizes_are_fitted():
    result = numpy_pipeline().generate(make_image(20, 50), seed=0, progress=False)
    assert result.frames.shape == (F, H, W, 3)
    assert result.image == {"source_height": 20, "source_width": 50, "crop_box": [15, 0, 35, 20]}


def test_progress_bar_goes_to_stderr(capsys):
    numpy_pipeline().generate(IMAGE, seed=0, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    # STEPS Euler steps + 3 decode calls (chunks of 2, 2 and a tail of 1)
    assert "6/6" in captured.err and "decode" in captured.err
    numpy_pipeline().generate(IMAGE, seed=0, progress=False)
    assert capsys.readouterr().err == ""


def test_decode_uses_chunks_and_the_tail_graph():
    seen = []

    def decoder(name):
        def run(inputs):
            seen.append((name, inputs["z"].shape[0]))
            return NUMPY_GRAPHS[name](inputs)

        return run

    numpy_pipeline(
        vae_decoder=decoder("vae_decoder"), vae_decoder_tail=decoder("vae_decoder_tail")
    ).generate(IMAGE, seed=0, progress=False)
    assert seen == [("vae_decoder", 2), ("vae_decoder", 2), ("vae_decoder_tail", 1)]


def test_on_step_reports_each_denoising_step_and_can_stop_the_run():
    pipe = numpy_pipeline()
    seen = []
    plain = pipe.generate(IMAGE, seed=3, progress=False)
    with_hook = pipe.generate(
        IMAGE, seed=3, progress=False, on_step=lambda done, total: seen.append((done, total))
    )
    assert seen == [(i, STEPS) for i in range(1, STEPS + 1)]
    np.testing.assert_array_equal(with_hook.frames, plain.frames)

    class Stop(Exception):
        pass

    def stop_after_two(done, total):
        if done == 2:
            raise Stop()

    calls_before = pipe.graphs["unet"].calls
    with pytest.raises(Stop):
        pipe.generate(IMAGE, seed=3, progress=False, on_step=stop_after_two)
    assert pipe.graphs["unet"].calls - calls_before == 2  # no step after the raise
    assert pipe.graphs["vae_decoder"].calls == 2 * 2  # the stopped run decoded nothing
