"""Bad input to svd-run, its Python API and the artifact manifest, as a careless or hostile user
would give it (issue 16). Every case: exit status 2 and one line `error: …` naming the value and
what was expected (or the right behaviour), and no file lost or left behind."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from svdeploy import fsutil
from svdeploy.errors import InputError, ManifestError
from svdeploy.manifest import MANIFEST_NAME, read_manifest, sha256_file
from svdeploy.runtime import VideoPipeline, save_frames, to_rgb_float
from svdeploy.runtime import run as run_module
from svdeploy.runtime import video as video_module
from svdeploy.runtime.cli import main
from svdref.diffusers_tiny import make_image
from svdref.fake_artifact import LH, LW, C, F, H, W, build_fake_artifact, numpy_pipeline

ARGS = ("--steps", "1", "--seed", "3", "--quiet", "--backend", "onnxruntime")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return build_fake_artifact(tmp_path_factory.mktemp("hostile_artifact") / "art")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile_image") / "input.png"
    Image.fromarray(make_image(H, W)).save(path)
    return path


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (hidden ones included) with its content digest."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run(*args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def run_error(*args) -> str:
    """Exit status 2 and exactly one line `error: …`; returns that line."""
    result = run(*args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def edit_manifest(source: Path, target: Path, edit) -> Path:
    shutil.copytree(source, target)
    data = json.loads((target / MANIFEST_NAME).read_text())
    edit(data)
    (target / MANIFEST_NAME).write_text(json.dumps(data))
    return target


def graph_entry(data: dict, name: str = "unet", fmt: str = "onnx") -> dict:
    return next(g for g in data["graphs"] if g["name"] == name and g["format"] == fmt)


# ---------------------------------------------------------------------------------------------
# 2. Data loss: outputs never replace inputs, artifact files or existing files unasked
# ---------------------------------------------------------------------------------------------
def test_out_equal_to_image_is_refused_and_the_image_kept(artifact, tmp_path):
    image = tmp_path / "photo.gif"
    Image.fromarray(make_image(H, W)).save(image)
    before = snapshot(tmp_path)
    line = run_error(artifact, "--image", image, "--out", image, "--overwrite", *ARGS)
    assert f"output {str(image)!r} is the --image input" in line
    assert snapshot(tmp_path) == before


def test_out_equal_to_noise_file_is_refused(artifact, image, tmp_path):
    noise = tmp_path / "noise.npy"
    noise.write_bytes(b"\x93NUMPY keep")
    line = run_error(
        artifact, "--image", image, "--out", noise, "--noise", noise, "--overwrite", *ARGS
    )
    assert "is the --noise input" in line and noise.read_bytes() == b"\x93NUMPY keep"


def test_sidecar_never_lands_inside_the_artifact(artifact, image, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    before = snapshot(art)
    # PNG-folder mode: OUT.json would have been the artifact's manifest.json
    line = run_error(art, "--image", image, "--out", art / "manifest", "--overwrite", *ARGS)
    assert "is inside the artifact" in line and "expected a path outside the artifact" in line
    assert snapshot(art) == before


def test_existing_sidecar_needs_overwrite(artifact, image, tmp_path):
    notes = tmp_path / "notes.json"
    notes.write_text("my notes")
    line = run_error(artifact, "--image", image, "--out", tmp_path / "notes", *ARGS)
    assert f"sidecar {str(notes)!r} exists; pass --overwrite to replace it" in line
    assert notes.read_text() == "my notes" and not (tmp_path / "notes").exists()
    # asked for, the replacement happens: frames folder and sidecar together
    result = run(artifact, "--image", image, "--out", tmp_path / "notes", "--overwrite", *ARGS)
    assert result.exit_code == 0, result.output
    assert json.loads(notes.read_text())["format"] == "png"
    assert len(list((tmp_path / "notes").glob("frame_*.png"))) == F


def test_existing_read_only_output_needs_overwrite(artifact, image, tmp_path):
    out = tmp_path / "clip.npy"
    out.write_bytes(b"earlier result")
    out.chmod(0o444)
    line = run_error(artifact, "--image", image, "--out", out, *ARGS)
    assert f"output {str(out)!r} exists; pass --overwrite to replace it" in line
    assert out.read_bytes() == b"earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.npy"]


# ---------------------------------------------------------------------------------------------
# 3. Reading outside the artifact, hangs
# ---------------------------------------------------------------------------------------------
def _add_external(data: dict, file_name, digest: str = "0" * 64) -> None:
    graph_entry(data)["extra"]["external_files"] = [{"file": file_name, "sha256": digest}]


@pytest.mark.parametrize("name", ["/etc/hostname", "../outside.bin", ""])
def test_external_file_paths_must_be_plain_relative_names(artifact, image, tmp_path, name):
    (tmp_path / "outside.bin").write_bytes(b"secret")
    art = edit_manifest(artifact, tmp_path / "art", lambda d: _add_external(d, name))
    line = run_error(art, "--image", image, "--out", tmp_path / "x.npy", *ARGS)
    assert f"external_files[0].file = {name!r}: expected a plain relative name" in line
    assert not (tmp_path / "x.npy").exists()


def test_symlink_to_a_device_or_outside_is_refused_without_reading(artifact, image, tmp_path):
    art = edit_manifest(artifact, tmp_path / "art", lambda d: _add_external(d, "weights.bin"))
    (art / "weights.bin").symlink_to("/dev/zero")  # reading it would never end
    line = run_error(art, "--image", image, "--out", tmp_path / "x.npy", *ARGS)
    assert "'weights.bin' resolves to '/dev/zero', outside the artifact" in line
    # a graph file itself, through a symlink leaving the artifact
    art2 = tmp_path / "art2"
    shutil.copytree(artifact, art2)
    (tmp_path / "elsewhere.onnx").write_bytes((art2 / "unet.onnx").read_bytes())
    (art2 / "unet.onnx").unlink()
    (art2 / "unet.onnx").symlink_to(tmp_path / "elsewhere.onnx")
    with pytest.raises(ManifestError, match="'unet.onnx' resolves to .*, outside the artifact"):
        read_manifest(art2, verify_hashes=False)


def test_fifo_inside_the_artifact_is_not_read(artifact, image, tmp_path):
    art = edit_manifest(artifact, tmp_path / "art", lambda d: _add_external(d, "pipe.bin"))
    os.mkfifo(art / "pipe.bin")  # opening it for reading would block forever
    line = run_error(art, "--image", image, "--out", tmp_path / "x.npy", *ARGS)
    assert "'pipe.bin' is not a regular file" in line


@pytest.mark.parametrize(
    "entries, message",
    [
        ("weights.bin", r"expected a list of \{file, sha256\} objects"),
        (["weights.bin"], r"external_files\[0\] = 'weights.bin': expected an object"),
        ([{"file": "weights.bin"}], r"expected an object with exactly 'file' and 'sha256'"),
        ([{"file": "missing.bin", "sha256": "0" * 64}], r"'missing.bin' is missing"),
    ],
)
def test_malformed_or_missing_external_files(artifact, tmp_path, entries, message):
    def edit(data):
        graph_entry(data)["extra"]["external_files"] = entries

    art = edit_manifest(artifact, tmp_path / "art", edit)
    with pytest.raises(ManifestError, match=message):
        VideoPipeline.load(art, backend="onnxruntime")


def test_manifest_that_is_a_device_is_refused(artifact, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    (art / MANIFEST_NAME).unlink()
    (art / MANIFEST_NAME).symlink_to("/dev/zero")
    with pytest.raises(ManifestError, match="resolves to '/dev/zero', outside the artifact"):
        read_manifest(art)


# ---------------------------------------------------------------------------------------------
# 4. Memory from small files: sizes are read from headers, before decoding
# ---------------------------------------------------------------------------------------------
def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width×height, with no pixel data at all."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_huge_image_is_refused_from_its_header(artifact, tmp_path, monkeypatch):
    big = png_header_only(tmp_path / "big.png", 13000, 13000)
    line = run_error(artifact, "--image", big, "--out", tmp_path / "x.npy", *ARGS)
    # refused by size: decoding would have failed differently (the file has no pixels)
    assert "is 13000×13000 = 169000000 pixels, above the limit of 67108864" in line
    assert "SVDEPLOY_MAX_IMAGE_PIXELS" in line
    # the documented override lifts the limit (the file then fails to decode, as it should)
    monkeypatch.setenv("SVDEPLOY_MAX_IMAGE_PIXELS", str(13000 * 13000))
    assert "is truncated or damaged" in run_error(
        artifact, "--image", big, "--out", tmp_path / "x.npy", *ARGS
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png"]


def test_noise_file_declaring_a_huge_array_is_refused_from_its_header(artifact, image, tmp_path):
    noise = tmp_path / "noise.npz"
    with zipfile.ZipFile(noise, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        good = np.zeros((1, 3, H, W), np.float32)
        with archive.open("image_noise.npy", "w") as fh:
            np.lib.format.write_array(fh, good)
        with archive.open("latents.npy", "w") as fh:  # declares 500 M floats, holds none
            np.lib.format.write_array_header_1_0(
                fh, {"descr": "<f4", "fortran_order": False, "shape": (500_000_000,)}
            )
    assert noise.stat().st_size < 2000
    line = run_error(
        artifact, "--image", image, "--out", tmp_path / "x.npy", "--noise", noise, *ARGS
    )
    assert f"latents has shape (500000000,): expected (1, {F}, {C}, {LH}, {LW})" in line


# ---------------------------------------------------------------------------------------------
# 5. Tracebacks instead of one line: full or read-only disks, overflowing values, odd paths
# ---------------------------------------------------------------------------------------------
def test_disk_full_while_writing_leaves_the_earlier_output(artifact, image, tmp_path, monkeypatch):
    out = tmp_path / "clip.gif"
    out.write_bytes(b"previous")
    (tmp_path / "clip.gif.json").write_text("{}")
    before = snapshot(tmp_path)

    def full_disk(frames, target, fps):
        Path(target).write_bytes(b"GIF89a half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(video_module, "_write_gif", full_disk)
    line = run_error(artifact, "--image", image, "--out", out, "--overwrite", *ARGS)
    assert f"cannot write {str(out)!r}: No space left on device (ENOSPC)" in line
    assert snapshot(tmp_path) == before  # no temporary left, the earlier files untouched


def test_read_only_folder_is_found_before_sampling(artifact, image, tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    def never(*args, **kwargs):
        raise AssertionError("the artifact was loaded although the output cannot be written")

    monkeypatch.setattr(fsutil.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(VideoPipeline, "load", never)
    line = run_error(artifact, "--image", image, "--out", tmp_path / "x.mp4", *ARGS)
    assert f"cannot write the output in {str(tmp_path)!r}: Read-only file system (EROFS)" in line
    assert list(tmp_path.iterdir()) == []


def test_real_read_only_mount_and_full_tmpfs(artifact, image, tmp_path):
    """The same two failures on real file systems, where this machine allows mounting (root
    with CAP_SYS_ADMIN); elsewhere the injected tests above cover the code paths."""
    ro, full = tmp_path / "ro", tmp_path / "full"
    ro.mkdir()
    full.mkdir()
    mounted = []
    try:
        for command in (
            ["mount", "--bind", str(ro), str(ro)],
            ["mount", "-o", "remount,ro,bind", str(ro)],
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)],
        ):
            if subprocess.run(command, capture_output=True).returncode != 0:
                pytest.skip(
                    f"cannot mount here ({' '.join(command[:3])}): not root or no "
                    "CAP_SYS_ADMIN; the injected EROFS/ENOSPC tests cover the paths"
                )
            mounted.append(Path(command[-1]))
        line = run_error(artifact, "--image", image, "--out", ro / "x.npy", *ARGS)
        assert "Read-only file system (EROFS)" in line and list(ro.iterdir()) == []
        # 64 KiB: the probe fits, the frames (float32 npy of 16×16 is small) do not after padding
        (full / "ballast").write_bytes(b"\0" * (60 * 1024))
        line = run_error(artifact, "--image", image, "--out", full / "x.mp4", *ARGS)
        assert "No space left on device (ENOSPC)" in line
        assert [p.name for p in full.iterdir()] == ["ballast"]
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", str(path)], capture_output=True)


def test_fps_beyond_the_bound_is_refused_before_sampling(artifact, image, tmp_path):
    line = run_error(artifact, "--image", image, "--out", tmp_path / "x.mp4", "--fps", 2**31, *ARGS)
    assert "fps = 2147483648: expected an integer in 1..120" in line
    line = run_error(artifact, "--image", image, "--out", tmp_path / "x.gif", "--fps", 101, *ARGS)
    assert "fps = 101: a GIF stores frame durations in 1/100 s, so expected fps ≤ 100" in line
    assert list(tmp_path.iterdir()) == []


def test_sidecar_path_that_is_a_folder(artifact, image, tmp_path):
    (tmp_path / "x.mp4.json").mkdir()
    line = run_error(artifact, "--image", image, "--out", tmp_path / "x.mp4", "--overwrite", *ARGS)
    assert "sidecar" in line and "is a folder; expected a file path" in line
    assert [p.name for p in tmp_path.iterdir()] == ["x.mp4.json"]


@pytest.mark.parametrize(
    "key, value",
    [("scaling_factor", 0), ("rho", 0), ("sigma_max", float("inf")), ("sigma_min", -1)],
)
def test_degenerate_scheduler_constants_are_refused_at_load(artifact, image, tmp_path, key, value):
    def edit(data):
        data["scheduler"][key] = value

    art = edit_manifest(artifact, tmp_path / "art", edit)
    line = run_error(art, "--image", image, "--out", tmp_path / "x.npy", *ARGS)
    assert f"scheduler.{key} = {value!r}: expected a finite number > 0" in line


def test_deeply_nested_manifest(artifact, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    text = (art / MANIFEST_NAME).read_text().rstrip()
    assert text.endswith("}")
    (art / MANIFEST_NAME).write_text(text[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ManifestError, match="nests JSON deeper than 32 levels"):
        read_manifest(art)


def test_empty_pil_image_in_the_api():
    pipe = numpy_pipeline()
    with pytest.raises(InputError, match=r"PIL image is 0×0 pixels: expected a non-empty image"):
        pipe.generate(Image.new("RGB", (0, 0)), seed=0, progress=False)


# ---------------------------------------------------------------------------------------------
# 6. Half-written output
# ---------------------------------------------------------------------------------------------
def test_failing_sidecar_leaves_no_video(artifact, image, tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(run_module, "json_text", full_disk)
    line = run_error(artifact, "--image", image, "--out", tmp_path / "x.webp", *ARGS)
    assert "x.webp.json" in line and "No space left on device (ENOSPC)" in line
    assert list(tmp_path.iterdir()) == []


def test_failing_publish_restores_both_earlier_outputs(artifact, image, tmp_path, monkeypatch):
    (tmp_path / "x.npy").write_bytes(b"old video")
    (tmp_path / "x.npy.json").write_text("old sidecar")
    before = snapshot(tmp_path)
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith("x.npy.json") and ".tmp-" in str(src):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", replace)
    line = run_error(artifact, "--image", image, "--out", tmp_path / "x.npy", "--overwrite", *ARGS)
    assert "Input/output error (EIO)" in line and "earlier outputs are unchanged" in line
    assert snapshot(tmp_path) == before


def test_stale_temporaries_of_a_killed_run_are_removed(artifact, image, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".x.npy.tmp-{dead.pid}-abc123.npy"
    stale.write_bytes(b"half")
    live = tmp_path / ".x.npy.tmp-1-abc123.npy"  # pid 1 is alive: another run's work
    live.write_bytes(b"busy")
    result = run(artifact, "--image", image, "--out", tmp_path / "x.npy", *ARGS)
    assert result.exit_code == 0, result.output
    assert not stale.exists() and live.exists()


# ---------------------------------------------------------------------------------------------
# 7. Silently wrong
# ---------------------------------------------------------------------------------------------
def test_float_tiff_in_0_255_is_not_clipped_to_white(tmp_path):
    levels = np.linspace(0.0, 255.0, 16 * 16, dtype=np.float32).reshape(16, 16)
    Image.fromarray(levels, mode="F").save(tmp_path / "f.tif")
    rgb = to_rgb_float(tmp_path / "f.tif")
    np.testing.assert_allclose(rgb[..., 0], levels / 255.0, rtol=1e-6)
    Image.fromarray(levels / 255.0, mode="F").save(tmp_path / "unit.tif")
    np.testing.assert_allclose(
        to_rgb_float(tmp_path / "unit.tif")[..., 1], levels / 255.0, rtol=1e-6
    )
    Image.fromarray(levels * 4, mode="F").save(tmp_path / "wide.tif")
    with pytest.raises(
        InputError,
        match=r"float image has values in \[0, 1020\]: expected "
        r"\[0, 1\] or \[0, 255\]",
    ):
        to_rgb_float(tmp_path / "wide.tif")


def test_gif_frame_rate_it_cannot_store_is_refused(tmp_path):
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    frames[1] = 255  # distinct frames: Pillow merges identical ones
    with pytest.raises(InputError, match=r"fps = 200: a GIF stores frame durations in 1/100 s"):
        save_frames(frames, tmp_path / "x.gif", fps=200)
    save_frames(frames, tmp_path / "y.gif", fps=100)
    with Image.open(tmp_path / "y.gif") as gif:
        assert gif.info["duration"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.gif"]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("cfg", "false", "cfg = 'false': expected true or false"),
        ("height", 64.9, "height = 64.9: expected an integer ≥ 1"),
        ("num_frames", True, "num_frames = True: expected an integer ≥ 1"),
        ("latent_shape", [F, C, LH, "8"], "latent_shape = '8': expected an integer ≥ 1"),
    ],
)
def test_manifest_values_are_not_coerced(artifact, tmp_path, field, value, message):
    def edit(data):
        data[field] = value

    art = edit_manifest(artifact, tmp_path / "art", edit)
    with pytest.raises(ManifestError, match=message):
        read_manifest(art)


def test_manifest_written_by_the_exporter_still_loads(artifact):
    manifest = read_manifest(artifact)
    assert manifest.cfg is True and manifest.height == H and manifest.scheduler["rho"] == 7.0


def test_partial_artifact_is_refused_for_being_partial(artifact, image, tmp_path):
    def edit(data):
        data["graphs"] = [g for g in data["graphs"] if g["name"] == "unet"]
        data["extra"]["partial"] = True

    art = edit_manifest(artifact, tmp_path / "art", edit)
    line = run_error(art, "--image", image, "--out", tmp_path / "x.npy", *ARGS)
    assert "is partial (exported with --graph, it holds only unet)" in line
    with pytest.raises(ManifestError, match="is partial"):
        VideoPipeline.load(art)


def test_animated_gif_is_refused(artifact, tmp_path):
    frames = [Image.fromarray(make_image(H, W)), Image.fromarray(255 - make_image(H, W))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    line = run_error(artifact, "--image", tmp_path / "anim.gif", "--out", tmp_path / "x.npy", *ARGS)
    assert "holds 2 frames (an animation or multi-page file): expected a still image" in line


# ---------------------------------------------------------------------------------------------
# 8. Unclear messages
# ---------------------------------------------------------------------------------------------
def test_nan_float_tiff_says_nan(artifact, tmp_path):
    values = np.full((H, W), np.nan, np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "nan.tif")
    line = run_error(artifact, "--image", tmp_path / "nan.tif", "--out", tmp_path / "x.npy", *ARGS)
    assert "float image holds NaN or Inf values" in line


def test_nan_or_huge_api_inputs_are_named_not_blamed_on_a_graph():
    pipe = numpy_pipeline()
    image = make_image(H, W)
    cases = [
        (
            dict(image_noise=np.full((1, 3, H, W), 1e30, np.float32)),
            r"image_noise holds values up to 1e\+30 in magnitude: expected standard-normal noise",
        ),
        (
            dict(noise_aug_strength=1e30),
            r"noise_aug_strength = 1e\+30: expected a finite number "
            r"in 0.0..100.0",
        ),
        (dict(max_guidance_scale=1e30), r"max_guidance_scale = 1e\+30"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InputError, match=message) as info:
            pipe.generate(image, seed=0, progress=False, **kwargs)
        assert "graph" not in str(info.value)
    nan_image = np.full((H, W, 3), np.nan, np.float32)
    with pytest.raises(InputError, match="float image array holds NaN or Inf values"):
        pipe.generate(nan_image, seed=0, progress=False)


def test_noise_files_of_the_wrong_kind_say_what_they_are(artifact, image, tmp_path):
    base = ("--image", image, "--out", tmp_path / "x.npy", *ARGS)
    (tmp_path / "text.npz").write_text("hello")
    assert "is not a readable .npz file: it is not a zip archive" in run_error(
        artifact, *base, "--noise", tmp_path / "text.npz"
    )
    np.save(tmp_path / "single.npy", np.zeros(3, np.float32))
    os.rename(tmp_path / "single.npy", tmp_path / "single.npz")
    assert "it is a single .npy array" in run_error(
        artifact, *base, "--noise", tmp_path / "single.npz"
    )
    (tmp_path / "folder.npz").mkdir()
    assert "is not a regular file (a folder?)" in run_error(
        artifact, *base, "--noise", tmp_path / "folder.npz"
    )
    assert not (tmp_path / "x.npy").exists()


def test_mindspore_graph_that_disagrees_with_the_manifest_is_one_line(artifact, image, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    # the full-chunk decoder's file replaced by the tail decoder's (another input shape)
    shutil.copyfile(art / "vae_decoder_tail.mindir", art / "vae_decoder.mindir")
    data = json.loads((art / MANIFEST_NAME).read_text())
    graph_entry(data, "vae_decoder", "mindir")["sha256"] = sha256_file(art / "vae_decoder.mindir")
    (art / MANIFEST_NAME).write_text(json.dumps(data))
    line = run_error(
        art,
        "--image",
        image,
        "--out",
        tmp_path / "x.npy",
        "--steps",
        1,
        "--seed",
        1,
        "--quiet",
        "--backend",
        "mindspore",
    )
    assert "graph 'vae_decoder' failed in backend 'mindspore' on inputs z (2, 4, 8, 8)" in line
    assert list(tmp_path.iterdir()) == [art]
