"""svd-run end to end over the fake artifact: formats, sidecar, noise files, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from svdeploy.runtime import VideoPipeline, output_kind
from svdeploy.runtime.cli import main
from svdref.diffusers_tiny import make_image
from svdref.fake_artifact import LH, LW, C, F, H, W, build_fake_artifact


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return build_fake_artifact(tmp_path_factory.mktemp("cli_artifact"))


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli_image") / "input.png"
    Image.fromarray(make_image(H, W)).save(path)
    return path


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def run_ok(*args: str):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def run_error(*args: str) -> str:
    """Run expecting failure: exit status 2 and exactly one line `error: ...` on stderr."""
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_help_explains_every_option():
    venv_bin = Path(sys.executable).parent
    proc = subprocess.run(
        [str(venv_bin / "svd-run"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    for option in (
        "--image",
        "--out",
        "--steps",
        "--fps",
        "--motion-bucket-id",
        "--noise-aug-strength",
        "--min-guidance-scale",
        "--max-guidance-scale",
        "--seed",
        "--backend",
        "--noise",
        "--no-verify",
        "--quiet",
    ):
        assert option in proc.stdout
    assert "ARTIFACT" in proc.stdout


@pytest.mark.parametrize("out_name", ["clip.mp4", "clip.gif", "clip.webp", "frames/", "clip.npy"])
def test_every_output_format_reads_back(artifact, image_file, tmp_path, out_name):
    out = str(tmp_path / out_name)
    result = run_ok(
        artifact,
        "--image",
        image_file,
        "--out",
        out,
        "--seed",
        5,
        "--fps",
        9,
        "--steps",
        2,
        "--backend",
        "onnxruntime",
        "--quiet",
    )
    assert "wrote" in result.stdout
    expected = VideoPipeline.load(artifact, backend="onnxruntime").generate(
        image_file, seed=5, fps=9, num_inference_steps=2, progress=False
    )
    target = Path(out.rstrip("/"))
    if out_name.endswith(".mp4"):
        with av.open(str(target)) as container:
            stream = container.streams.video[0]
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            assert stream.average_rate == 9
        assert len(decoded) == F and decoded[0].shape == (H, W, 3)
    elif out_name.endswith((".gif", ".webp")):
        with Image.open(target) as image:
            assert image.n_frames == F and image.size == (W, H)
            image.load()
            assert image.info["duration"] in (110, 111)  # 1000/9 ms (GIF: 10 ms units)
    elif out_name == "frames/":
        files = sorted(target.iterdir())
        assert [p.name for p in files] == [f"frame_{i:04d}.png" for i in range(F)]
        for i, path in enumerate(files):
            np.testing.assert_array_equal(np.asarray(Image.open(path)), expected.frames_uint8[i])
    else:
        frames = np.load(target)
        assert frames.dtype == np.float32 and frames.shape == (F, H, W, 3)
        np.testing.assert_array_equal(frames, expected.frames)  # bitwise: same seed, same backend

    sidecar = json.loads(Path(out.rstrip("/") + ".json").read_text())
    params = sidecar["parameters"]
    assert (params["fps"], params["num_inference_steps"], params["motion_bucket_id"]) == (9, 2, 127)
    assert (params["min_guidance_scale"], params["max_guidance_scale"]) == (1.0, 3.0)
    assert sidecar["seed"] == 5 and sidecar["backend"] == "onnxruntime"
    assert sidecar["variant"] == "fake" and sidecar["artifact"] == str(artifact.resolve())
    assert sidecar["image"] == str(image_file.resolve()) and sidecar["format"] == output_kind(out)
    assert sidecar["image_info"] == {"source_height": H, "source_width": W, "crop_box": None}
    assert sidecar["decode_chunk_size"] == 2 and sidecar["frames"] == [F, H, W, 3]
    timings = sidecar["timings"]
    assert len(timings["per_step_s"]) == 2 and timings["graphs"]["unet"]["calls"] == 2
    assert timings["graphs"]["vae_decoder_tail"]["calls"] == 1
    assert {"end_to_end_s", "load_s", "write_s", "total_s", "decode_s"} <= set(timings)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files


def test_noise_file_reproduces_the_api_run(artifact, image_file, tmp_path):
    rng = np.random.default_rng(9)
    image_noise = rng.standard_normal((1, 3, H, W), dtype=np.float32)
    latents = rng.standard_normal((1, F, C, LH, LW), dtype=np.float32)
    np.savez(tmp_path / "noise.npz", image_noise=image_noise, latents=latents)
    run_ok(
        artifact,
        "--image",
        image_file,
        "--out",
        tmp_path / "a.npy",
        "--noise",
        tmp_path / "noise.npz",
        "--backend",
        "mindspore",
        "-q",
    )
    expected = VideoPipeline.load(artifact, backend="mindspore").generate(
        image_file, image_noise=image_noise, latents=latents, progress=False
    )
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), expected.frames)
    sidecar = json.loads((tmp_path / "a.npy.json").read_text())
    assert sidecar["seed"] is None and sidecar["noise_file"].endswith("noise.npz")
    assert sidecar["backend"] == "mindspore"


def test_progress_bar_on_stderr(artifact, image_file, tmp_path):
    result = run_ok(artifact, "--image", image_file, "--out", tmp_path / "p.npy", "--seed", 1)
    assert "decode" in result.stderr and "%" in result.stderr
    assert "%" not in result.stdout


def test_errors_are_one_line_with_exit_status_2(artifact, image_file, tmp_path):
    out = tmp_path / "x.mp4"
    base = ["--image", image_file, "--out", out]
    assert "num_inference_steps = 0: expected an integer ≥ 1" in run_error(
        artifact, *base, "--steps", 0
    )
    assert "motion_bucket_id = 256: expected an integer in 0..255" in run_error(
        artifact, *base, "--motion-bucket-id", 256
    )
    assert "fps = 0: expected an integer in 1..120" in run_error(artifact, *base, "--fps", 0)
    assert "min_guidance_scale = 4.0 is above max_guidance_scale = 2.0" in run_error(
        artifact, *base, "--min-guidance-scale", 4, "--max-guidance-scale", 2
    )
    assert "backend 'tpu' is unknown" in run_error(artifact, *base, "--backend", "tpu")
    assert "manifest.json is missing" in run_error(tmp_path, *base)
    assert "extension '.avi'" in run_error(
        artifact, "--image", image_file, "--out", tmp_path / "x.avi"
    )

    missing = tmp_path / "nope.png"
    assert f"image {str(missing)!r} does not exist" in run_error(
        artifact, "--image", missing, "--out", out
    )
    text = tmp_path / "text.png"
    text.write_text("hello")
    assert "is not an image file Pillow can read" in run_error(
        artifact, "--image", text, "--out", out
    )
    cut = tmp_path / "cut.png"
    big = tmp_path / "big.png"
    Image.fromarray(make_image(64, 64)).save(big)
    cut.write_bytes(big.read_bytes()[:300])
    assert "is truncated or damaged" in run_error(artifact, "--image", cut, "--out", out)

    np.savez(tmp_path / "short.npz", image_noise=np.zeros((1, 3, H, W), np.float32))
    assert "lacks array(s) latents" in run_error(artifact, *base, "--noise", tmp_path / "short.npz")
    np.savez(
        tmp_path / "wrong.npz",
        image_noise=np.zeros((1, 3, H, W), np.float32),
        latents=np.zeros((1, F + 1, C, LH, LW), np.float32),
    )
    assert (
        f"latents has shape (1, {F + 1}, {C}, {LH}, {LW}): expected (1, {F}, {C}, {LH}, {LW})"
        in run_error(artifact, *base, "--noise", tmp_path / "wrong.npz")
    )
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert "is not a readable .npz file" in run_error(
        artifact, *base, "--noise", tmp_path / "junk.npz"
    )

    # nothing was written by any failed run
    assert not out.exists() and not (tmp_path / "x.mp4.json").exists()


def test_inputs_are_checked_before_the_artifact_is_hashed(artifact, image_file, tmp_path):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(artifact, damaged)
    for name in ("unet.onnx", "unet.mindir"):
        (damaged / name).write_bytes((damaged / name).read_bytes()[:-10])
    out = tmp_path / "x.npy"
    # a bad image is reported first, without reading the graphs
    assert "does not exist" in run_error(damaged, "--image", tmp_path / "none.png", "--out", out)
    # with valid inputs, the damaged graph file is found
    line = run_error(damaged, "--image", image_file, "--out", out)
    assert "'unet.onnx' has sha256" in line and "modified or damaged" in line
    assert not out.exists()
