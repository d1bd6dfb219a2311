"""Image loading, conversion, fitting, the CLIP branch against diffusers, the VAE branch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from svdeploy.errors import InputError
from svdeploy.runtime import (
    center_crop_box,
    clip_pixel_values,
    fit_to_size,
    load_image,
    prepare_image,
    resize_antialiased,
    to_rgb_float,
    vae_encoder_input,
)
from svdref.diffusers_tiny import build_tiny_pipeline, make_image

torch.set_num_threads(2)


# ---------------------------------------------------------------------------------------------
# CLIP branch vs diffusers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(64, 64), (32, 48), (300, 500), (576, 1024), (17, 260)])
def test_antialiased_resize_equals_diffusers(size):
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
        _resize_with_antialiasing,
    )

    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, *size)).astype(np.float32)
    theirs = _resize_with_antialiasing(torch.from_numpy(x), (224, 224)).numpy()
    ours = resize_antialiased(x)
    assert ours.shape == (1, 3, 224, 224)
    diff = float(np.abs(ours - theirs).max())
    print(f"resize {size} -> 224: max |ours - diffusers| = {diff:.2e}")
    assert diff < 2e-5


def test_resize_of_a_constant_image_is_constant():
    # the blur and bicubic operators each preserve constants (rows sum to one)
    x = np.full((1, 3, 40, 90), 0.3)
    np.testing.assert_allclose(resize_antialiased(x), 0.3, atol=1e-12)


def test_clip_pixel_values_equal_diffusers_preprocessing():
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
        _resize_with_antialiasing,
    )

    pipe = build_tiny_pipeline(0)
    pixels = make_image(48, 80).astype(np.float32).transpose(2, 0, 1)[None] / np.float32(255)
    resized = _resize_with_antialiasing(torch.from_numpy(pixels) * 2.0 - 1.0, (224, 224))
    theirs = pipe.feature_extractor(
        images=(resized + 1.0) / 2.0,
        do_normalize=True,
        do_center_crop=False,
        do_resize=False,
        do_rescale=False,
        return_tensors="pt",
    ).pixel_values.numpy()
    ours = clip_pixel_values(pixels)
    assert ours.dtype == np.float32 and ours.shape == (1, 3, 224, 224)
    assert np.abs(ours - theirs).max() < 1e-5


# ---------------------------------------------------------------------------------------------
# VAE branch
# ---------------------------------------------------------------------------------------------
def test_vae_encoder_input():
    rng = np.random.default_rng(1)
    pixels = rng.uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)
    noise = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    out = vae_encoder_input(pixels, noise, 0.02)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 2 * pixels - 1 + 0.02 * noise, rtol=1e-6, atol=1e-7)
    with pytest.raises(
        InputError, match=r"image_noise has shape \(1, 3, 4, 4\): expected \(1, 3, 8, 8\)"
    ):
        vae_encoder_input(pixels, noise[..., :4, :4], 0.02)


# ---------------------------------------------------------------------------------------------
# Image kinds
# ---------------------------------------------------------------------------------------------
def save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_rgb_png_roundtrip_is_exact(tmp_path):
    rgb = make_image(20, 30)
    loaded = to_rgb_float(save(Image.fromarray(rgb), tmp_path / "a.png"))
    assert loaded.dtype == np.float32 and loaded.shape == (20, 30, 3)
    np.testing.assert_array_equal(np.round(loaded * 255).astype(np.uint8), rgb)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = make_image(10, 12)[..., 0]
    loaded = to_rgb_float(save(Image.fromarray(gray, "L"), tmp_path / "g.png"))
    assert loaded.shape == (10, 12, 3)
    np.testing.assert_allclose(loaded[..., 0], gray / 255.0, atol=1e-7)
    assert np.array_equal(loaded[..., 0], loaded[..., 2])


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red-ish everywhere
    rgba[0, 0, 3] = 0  # fully transparent
    rgba[0, 1, 3] = 255  # opaque
    rgba[0, 2, 3] = 128  # half
    loaded = to_rgb_float(save(Image.fromarray(rgba, "RGBA"), tmp_path / "t.png"))
    np.testing.assert_allclose(loaded[0, 0], [1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(loaded[0, 1], [200 / 255, 0, 0], atol=1e-6)
    a = 128 / 255
    np.testing.assert_allclose(loaded[0, 2], [200 / 255 * a + 1 - a, 1 - a, 1 - a], atol=1e-6)


def test_palette_images(tmp_path):
    rgb = make_image(16, 16)
    palette = Image.fromarray(rgb).quantize(colors=16)
    loaded = to_rgb_float(save(palette, tmp_path / "p.png"))
    np.testing.assert_allclose(loaded, np.asarray(palette.convert("RGB")) / 255.0, atol=1e-6)
    # a transparent palette entry reads as white
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])
    loaded = to_rgb_float(
        save(palette, tmp_path / "pt.png", transparency=palette.info["transparency"])
    )
    np.testing.assert_allclose(loaded[0, 0], [1, 1, 1], atol=1e-6)


def test_sixteen_bit_keeps_precision(tmp_path):
    values = np.array([[0, 1000, 1001, 65535]], np.uint16)
    loaded = to_rgb_float(save(Image.fromarray(values), tmp_path / "d.png"))
    np.testing.assert_allclose(loaded[..., 1], values / 65535.0, rtol=1e-6)
    assert loaded[0, 1, 0] != loaded[0, 2, 0]  # 8-bit truncation would merge these two


def test_exif_orientation_is_applied(tmp_path):
    rgb = make_image(12, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = save(Image.fromarray(rgb), tmp_path / "e.png", exif=exif.tobytes())
    loaded = to_rgb_float(path)
    assert loaded.shape == (20, 12, 3)
    np.testing.assert_array_equal(np.round(loaded * 255).astype(np.uint8), np.rot90(rgb, k=-1))


def test_arrays_are_accepted_and_checked():
    rgb = make_image(6, 7)
    np.testing.assert_allclose(to_rgb_float(rgb), rgb / 255.0, atol=1e-7)
    np.testing.assert_allclose(to_rgb_float(rgb.astype(np.float32) / 255), rgb / 255.0, atol=1e-7)
    with pytest.raises(InputError, match=r"values in \[2, 2\]: expected finite values in \[0, 1\]"):
        to_rgb_float(np.full((4, 4, 3), 2.0, np.float32))
    with pytest.raises(InputError, match=r"shape \(4, 4, 2\)"):
        to_rgb_float(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(InputError, match="dtype int32"):
        to_rgb_float(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(InputError, match="expected a file path, a PIL image or a numpy array"):
        to_rgb_float(42)


def test_bad_image_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="is not a file"):
        load_image(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    with pytest.raises(InputError, match="is not an image file Pillow can read"):
        load_image(text)
    whole = save(Image.fromarray(make_image(64, 64)), tmp_path / "whole.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError, match="is truncated or damaged"):
        load_image(cut)


# ---------------------------------------------------------------------------------------------
# Fitting to the export size
# ---------------------------------------------------------------------------------------------
def test_same_size_is_untouched():
    rgb = make_image(16, 24).astype(np.float32) / 255
    assert fit_to_size(rgb, 16, 24) is rgb
    prepared = prepare_image(make_image(16, 24), 16, 24)
    assert prepared.crop_box is None and prepared.pixels.shape == (1, 3, 16, 24)


def test_center_crop_box():
    assert center_crop_box(100, 300, 50, 100) == (50, 0, 250, 100)  # too wide
    assert center_crop_box(300, 100, 50, 100) == (0, 125, 100, 175)  # too tall
    assert center_crop_box(576, 1024, 576, 1024) == (0, 0, 1024, 576)
    assert center_crop_box(1080, 1920, 576, 1024) == (0, 0, 1920, 1080)  # same aspect: no crop


def test_wider_image_is_center_cropped_not_stretched():
    # a 40×120 picture: grey center 40×80 with pure red bars on both sides
    rgb = np.full((40, 120, 3), 0.5, np.float32)
    rgb[:, :20] = rgb[:, 100:] = (1.0, 0.0, 0.0)
    fitted = fit_to_size(rgb, 16, 32)  # aspect 2: keeps the middle 40×80
    assert fitted.shape == (16, 32, 3)
    np.testing.assert_allclose(fitted, 0.5, atol=1e-5)  # no red left: the bars were cropped


def test_downscale_quality_and_range():
    # Lanczos on a smooth ramp ≈ the exact average of each 2×2 block; values stay in [0, 1]
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    rgb = np.stack([ramp, ramp.T, 1 - ramp], axis=-1)
    fitted = fit_to_size(rgb, 32, 32)
    block_mean = rgb.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    assert np.abs(fitted - block_mean)[2:-2, 2:-2].max() < 2e-3
    sharp = np.zeros((31, 57, 3), np.float32)
    sharp[:, ::2] = 1.0
    out = fit_to_size(sharp, 24, 40)
    assert out.min() >= 0.0 and out.max() <= 1.0
