"""Chained clips, overlapping chunked decoding and batches of images, over the injected NumPy
fake graphs (svdref.fake_artifact): frame counts, the latent hand-over, the blending math on a
synthetic decoder, seeds, batch equality with single runs. The CLI cases run the fake
artifact's ONNX graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from svdeploy.errors import InputError
from svdeploy.runtime.chain import chained_frame_count, clip_rng
from svdeploy.runtime.cli import main
from svdeploy.runtime.decode import (
    Window,
    blend_weights,
    border_flicker,
    decode_blended,
    decode_calls,
    decode_windows,
)
from svdref.diffusers_tiny import make_image
from svdref.fake_artifact import (
    LH,
    LW,
    NUMPY_GRAPHS,
    C,
    F,
    H,
    K,
    W,
    build_fake_artifact,
    numpy_pipeline,
)

IMAGE = make_image(H, W)
SCALE = 0.18215


# ---------------------------------------------------------------------------------------------
# decode windows and blending
# ---------------------------------------------------------------------------------------------
def test_windows_without_overlap_are_the_plain_chunks_and_tail():
    assert decode_windows(5, 2, 0, tail=1) == [
        Window(0, 2, "vae_decoder"),
        Window(2, 4, "vae_decoder"),
        Window(4, 5, "vae_decoder_tail"),
    ]
    # a length the tail graph cannot finish: the last full window is aligned to the end
    assert decode_windows(7, 3, 0, tail=2) == [
        Window(0, 3, "vae_decoder"),
        Window(3, 6, "vae_decoder"),
        Window(4, 7, "vae_decoder"),
    ]


def test_overlapping_windows_have_stride_chunk_minus_overlap_and_cover_the_end():
    windows = decode_windows(9, 4, 1)
    assert [(w.start, w.stop) for w in windows] == [(0, 4), (3, 7), (5, 9)]
    assert all(w.graph == "vae_decoder" for w in windows)
    assert decode_calls(8, 2, 1) == 7 and decode_calls(8, 2, 0) == 4
    with pytest.raises(InputError, match="decode_overlap = 2: expected an integer in 0..1"):
        decode_windows(8, 2, 2)
    with pytest.raises(InputError, match="at least one full chunk"):
        decode_windows(1, 2, 1)


@pytest.mark.parametrize(
    "total,chunk,overlap", [(8, 2, 1), (9, 4, 1), (10, 4, 3), (7, 3, 0), (13, 5, 2)]
)
def test_blend_weights_form_a_partition_of_unity_with_linear_ramps(total, chunk, overlap):
    windows = decode_windows(total, chunk, overlap, tail=None)
    weights = blend_weights(windows, overlap)
    coverage = np.zeros(total)
    for win, w in zip(windows, weights):
        assert w.shape == (win.stop - win.start,) and np.all(w >= 0)
        coverage[win.start : win.stop] += w
    assert np.all(coverage > 0)
    if overlap:
        # a frame's weights ramp: strictly increasing across the first window's fade-out
        first, second = weights[0], weights[1]
        shared = windows[0].stop - windows[1].start
        assert np.all(np.diff(second[:shared]) >= 0) and np.all(np.diff(first[-shared:]) <= 0)
        if 2 * overlap <= chunk:  # ramps do not meet inside a window: strictly linear
            assert np.all(np.diff(second[:shared]) > 0) and np.all(np.diff(first[-shared:]) < 0)
            np.testing.assert_allclose(coverage[windows[1].start : windows[0].stop], 1.0)
        if total == 8:  # stride 1: every inner frame is the mean of its two windows
            np.testing.assert_allclose(coverage[1:-1], 1.0)


def synthetic_decoder(context_weight: float):
    """A decoder whose output for a frame depends on the mean of its chunk (like the temporal
    VAE decoder's frame mixing): x + c·mean(chunk). All-frames decoding = one chunk."""

    def decode(graph: str, z: np.ndarray) -> np.ndarray:
        return (z + context_weight * z.mean(axis=0, keepdims=True)).astype(np.float32)

    return decode


def test_overlap_blending_on_a_synthetic_decoder_is_exact_math_and_reduces_seams():
    rng = np.random.default_rng(0)
    total = 12
    # a smooth "video": frames drift linearly, as a moving object would
    z = (
        np.linspace(0, 1, total)[:, None, None, None] * rng.standard_normal((1, 3, 4, 4))
        + 0.05 * rng.standard_normal((total, 3, 4, 4))
    ).astype(np.float32)
    decode = synthetic_decoder(0.8)
    full = decode("vae_decoder", z)
    plain_windows = decode_windows(total, 2, 0)
    plain = decode_blended(z, plain_windows, 0, decode)
    blended_windows = decode_windows(total, 2, 1)
    blended = decode_blended(z, blended_windows, 1, decode)
    # the blend is the documented formula: inner frame t = mean of windows (t-1,t) and (t,t+1)
    for t in range(1, total - 1):
        left = z[t] + 0.8 * (z[t - 1] + z[t]) / 2
        right = z[t] + 0.8 * (z[t] + z[t + 1]) / 2
        np.testing.assert_allclose(blended[t], (left + right) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plain[:2], decode("vae_decoder", z[:2]), rtol=1e-6)
    # seams: the border step of plain chunks is far above its inside steps; blending evens it
    plain_flicker = border_flicker(plain, plain_windows)
    blended_flicker = border_flicker(blended, plain_windows)
    assert plain_flicker["border"] > 1.5 * plain_flicker["inside"]
    assert blended_flicker["border"] < plain_flicker["border"]
    assert np.abs(blended - full).mean() < np.abs(plain - full).mean()


def test_pipeline_overlap_zero_is_unchanged_and_overlap_uses_more_full_chunk_calls():
    pipe = numpy_pipeline()
    plain = pipe.generate(IMAGE, seed=2, progress=False)
    again = pipe.generate(IMAGE, seed=2, progress=False, decode_overlap=0)
    np.testing.assert_array_equal(plain.frames, again.frames)
    assert plain.timings["graphs"]["vae_decoder_tail"]["calls"] == 1
    blended = pipe.generate(IMAGE, seed=2, progress=False, decode_overlap=1)
    assert blended.timings["graphs"]["vae_decoder"]["calls"] == decode_calls(F, K, 1) == F - 1
    assert blended.timings["graphs"]["vae_decoder_tail"]["calls"] == 0
    assert blended.details["decode_overlap"] == 1
    # the first frame is decoded by the first window alone in both
    np.testing.assert_allclose(blended.frames[0], plain.frames[0], atol=1e-6)
    assert not np.allclose(blended.frames[1:], plain.frames[1:])


# ---------------------------------------------------------------------------------------------
# chained clips
# ---------------------------------------------------------------------------------------------
def recording(name: str, log: list):
    def graph(inputs):
        log.append((name, {k: v.copy() for k, v in inputs.items()}))
        return NUMPY_GRAPHS[name](inputs)

    return graph


def test_chain_frame_count_handover_and_seeds():
    log: list = []
    pipe = numpy_pipeline(
        unet=recording("unet", log),
        vae_decoder=recording("vae_decoder", log),
        vae_decoder_tail=recording("vae_decoder_tail", log),
    )
    clips, steps = 3, 2
    result = pipe.generate(IMAGE, seed=9, clips=clips, num_inference_steps=steps, progress=False)
    assert result.frames.shape == (chained_frame_count(clips, F), H, W, 3) == (13, H, W, 3)
    assert result.details["clips"] == clips and result.timings["graphs"]["unet"]["calls"] == 6
    unet_calls = [inputs for name, inputs in log if name == "unet"]
    decoded = [inputs["z"] for name, inputs in log if name.startswith("vae_decoder")]
    z_all = np.concatenate(decoded)  # chunks of 2: 13 = 6·2 + 1 (tail)
    assert z_all.shape[0] == 13
    # clip 0 equals a single run with the same seed (same U-Net inputs, same first 5 latents)
    single_log: list = []
    single = numpy_pipeline(unet=recording("unet", single_log)).generate(
        IMAGE, seed=9, num_inference_steps=steps, progress=False
    )
    for a, (_, b) in zip(unet_calls[:steps], single_log):
        np.testing.assert_array_equal(a["sample"], b["sample"])
    np.testing.assert_allclose(result.frames[:4], single.frames[:4], atol=1e-6)
    # hand-over: clip k's image-latent channels = clip k-1's last denoised latent / scaling
    for k in (1, 2):
        cond = unet_calls[k * steps]["sample"][F:, C:]  # cond half, image channels
        previous_last = z_all[k * (F - 1)]  # decoder input = latent / scaling
        for f in range(F):
            np.testing.assert_allclose(cond[f], previous_last, rtol=1e-6)
        assert not unet_calls[k * steps]["sample"][:F, C:].any()  # uncond: zero latent
        # the CLIP branch keeps the input image's embedding
        np.testing.assert_array_equal(unet_calls[k * steps]["context"], unet_calls[0]["context"])
    # clip k ≥ 1 starts from default_rng([seed, k])'s latents
    rng = clip_rng(9, 1)
    rng.standard_normal((1, 3, H, W), dtype=np.float32)
    noise = rng.standard_normal((1, F, C, LH, LW), dtype=np.float32)[0]
    first_sample = unet_calls[steps]["sample"][:F, :C]
    ratio = first_sample / noise
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)
    # reproducible
    np.testing.assert_array_equal(
        numpy_pipeline()
        .generate(IMAGE, seed=9, clips=clips, num_inference_steps=steps, progress=False)
        .frames,
        result.frames,
    )


def test_chain_rejects_bad_clip_counts():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="clips"):
            numpy_pipeline().generate(IMAGE, seed=0, clips=bad, progress=False)


# ---------------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------------
def test_batch_of_images_equals_single_runs_with_seed_plus_index():
    pipe = numpy_pipeline()
    images = [IMAGE, IMAGE[::-1].copy(), IMAGE[:, ::-1].copy()]
    videos = pipe(images, seed=40, progress=False)
    assert isinstance(videos, list) and len(videos) == 3
    for i, (image, video) in enumerate(zip(images, videos)):
        single = pipe(image, seed=40 + i, progress=False)
        assert np.abs(video.astype(np.int16) - single.astype(np.int16)).max() == 0
    floats = [pipe.generate(im, seed=40 + i, progress=False).frames for i, im in enumerate(images)]
    from svdeploy.runtime.batch import generate_batch

    for got, want in zip(generate_batch(pipe, images, seed=40, progress=False), floats):
        assert np.abs(got.frames - want).max() <= 1e-5
    with pytest.raises(InputError, match="empty"):
        generate_batch(pipe, [], seed=0)


# ---------------------------------------------------------------------------------------------
# CLI over the fake artifact
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    return build_fake_artifact(tmp_path_factory.mktemp("long_artifact"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list:
    folder = tmp_path_factory.mktemp("long_images")
    paths = []
    for name, array in (("cat", IMAGE), ("dog", IMAGE[::-1].copy())):
        Image.fromarray(array).save(folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    return paths


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_batch_writes_one_video_per_image_equal_to_single_runs(artifact, images, tmp_path):
    out = tmp_path / "videos"
    result = invoke(
        artifact,
        "-i",
        images[0],
        "-i",
        images[1],
        "--out",
        out,
        "--format",
        "npy",
        "--seed",
        5,
        "--steps",
        2,
        "--backend",
        "onnxruntime",
        "-q",
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "cat.npy",
        "cat.npy.json",
        "dog.npy",
        "dog.npy.json",
    ]
    for i, image in enumerate(images):
        single = tmp_path / f"single{i}.npy"
        ok = invoke(
            artifact,
            "-i",
            image,
            "--out",
            single,
            "--seed",
            5 + i,
            "--steps",
            2,
            "--backend",
            "onnxruntime",
            "-q",
        )
        assert ok.exit_code == 0, ok.output
        batch = np.load(out / f"{image.stem}.npy")
        assert np.abs(batch - np.load(single)).max() <= 1e-5
        assert json.loads((out / f"{image.stem}.npy.json").read_text())["seed"] == 5 + i


def test_cli_clips_and_overlap_write_the_long_video(artifact, images, tmp_path):
    out = tmp_path / "long.npy"
    result = invoke(
        artifact,
        "-i",
        images[0],
        "--out",
        out,
        "--clips",
        3,
        "--decode-overlap",
        1,
        "--seed",
        1,
        "--steps",
        2,
        "--backend",
        "onnxruntime",
        "-q",
    )
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (3 * (F - 1) + 1, H, W, 3)
    sidecar = json.loads((tmp_path / "long.npy.json").read_text())
    assert sidecar["clips"] == 3 and sidecar["decode_overlap"] == 1 and sidecar["num_frames"] == 13
    bad = invoke(artifact, "-i", images[0], "--out", tmp_path / "x.npy", "--decode-overlap", K)
    assert bad.exit_code == 2 and "decode_overlap = 2: expected an integer in 0..1" in bad.output
    assert not (tmp_path / "x.npy").exists()


def test_help_documents_the_new_options_and_batch_refuses_duplicate_stems(
    artifact, images, tmp_path
):
    text = invoke("--help").output
    for option in ("--clips", "--decode-overlap", "--format", "--plan", "--max-memory"):
        assert option in text
    twin = tmp_path / "other"
    twin.mkdir()
    (twin / images[0].name).write_bytes(images[0].read_bytes())
    out = tmp_path / "videos"
    result = invoke(artifact, "-i", images[0], "-i", twin / images[0].name, "--out", out)
    assert result.exit_code == 2 and "share the name 'cat'" in result.output
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# what the merge with main's output hardening, precision and svd-serve's on_step adds
# ---------------------------------------------------------------------------------------------
def test_cli_batch_refuses_existing_videos_without_overwrite_and_an_input_as_output(
    artifact, images, tmp_path
):
    out = tmp_path / "videos"
    args = (
        "-i",
        images[0],
        "-i",
        images[1],
        "--out",
        out,
        "--format",
        "npy",
        "--seed",
        3,
        "--steps",
        1,
        "--backend",
        "onnxruntime",
        "-q",
    )
    assert invoke(artifact, *args).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = invoke(artifact, *args)
    assert again.exit_code == 2 and again.output.startswith("error: ")
    assert "exists; pass --overwrite" in again.output and len(again.output.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    replaced = invoke(artifact, *args, "--overwrite", "--seed", 4)
    assert replaced.exit_code == 0, replaced.output
    sidecar = json.loads((out / "cat.npy.json").read_text())
    assert sidecar["seed"] == 4 and sidecar["precision"] == "fp32"
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no temporary left
    # an image that is also one of the batch's outputs would be destroyed: refused at once
    victim = out / "bird.gif"
    Image.fromarray(IMAGE).save(victim)
    kept = victim.read_bytes()
    result = invoke(
        artifact,
        "-i",
        images[0],
        "-i",
        victim,
        "--out",
        out,
        "--format",
        "gif",
        "--overwrite",
        "--backend",
        "onnxruntime",
        "-q",
    )
    assert result.exit_code == 2 and "is the --image" in result.output, result.output
    assert victim.read_bytes() == kept and not (out / "cat.gif").exists()


def test_a_new_batch_folder_is_removed_again_when_an_output_is_refused(artifact, images, tmp_path):
    out = artifact / "videos"  # inside the artifact: refused before any work
    result = invoke(artifact, "-i", images[0], "-i", images[1], "--out", out, "-q")
    assert result.exit_code == 2 and "inside the artifact" in result.output
    assert not out.exists()


def test_on_step_counts_the_steps_of_every_clip_of_a_chain():
    calls = []
    pipe = numpy_pipeline()
    pipe.generate(
        IMAGE,
        seed=0,
        clips=3,
        num_inference_steps=2,
        progress=False,
        on_step=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(i, 6) for i in range(1, 7)]

    class Stop(Exception):
        pass

    def stop_at_third(done, total):
        if done == 3:
            raise Stop

    with pytest.raises(Stop):
        pipe.generate(
            IMAGE, seed=0, clips=3, num_inference_steps=2, progress=False, on_step=stop_at_third
        )
