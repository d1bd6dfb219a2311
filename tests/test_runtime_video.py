"""Output writers: every format reads back; sizes, frame counts and rates; atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from svdeploy.errors import InputError
from svdeploy.fsutil import atomic_write_json
from svdeploy.runtime import frames_to_uint8, output_kind, save_frames, sidecar_path
from svdeploy.runtime import video as video_module


def moving_frames(count: int = 6, height: int = 24, width: int = 32) -> np.ndarray:
    """Float frames in [0, 1]: a bright square sliding over a gradient."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((count, height, width, 3), np.float32)
    for i in range(count):
        frames[i] = np.stack([xx / width, yy / height, np.full_like(xx, 0.3)], axis=-1)
        frames[i, 4:12, 2 + 3 * i : 10 + 3 * i] = 1.0
    return frames


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def read_mp4(path: Path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return frames, rate, stream.codec_context.name


def test_output_kinds():
    assert [
        output_kind(p) for p in ("a.mp4", "a.GIF", "x/a.webp", "a.npy", "frames", "frames/")
    ] == ["mp4", "gif", "webp", "npy", "png", "png"]
    with pytest.raises(InputError, match=r"extension '.avi': expected .mp4, .gif, .webp, .npy"):
        output_kind("clip.avi")
    assert sidecar_path("out/clip.mp4") == Path("out/clip.mp4.json")
    assert sidecar_path("out/frames/") == Path("out/frames.json")


def test_frames_to_uint8_rounds():
    values = np.array([0.0, 0.5 / 255 - 1e-4, 0.5 / 255 + 1e-4, 1.0, 1.2, -0.1], np.float32)
    np.testing.assert_array_equal(frames_to_uint8(values), [0, 0, 1, 255, 255, 0])


def test_mp4_reads_back_with_count_size_rate(tmp_path):
    frames = moving_frames()
    save_frames(frames, tmp_path / "clip.mp4", fps=9)
    decoded, rate, codec = read_mp4(tmp_path / "clip.mp4")
    assert codec == "h264" and rate == 9
    assert len(decoded) == 6 and decoded[0].shape == (24, 32, 3)
    # near-lossless (crf 18; chroma is subsampled): the moving square is where it should be
    assert np.abs(decoded[3].astype(int) - frames_to_uint8(frames[3]).astype(int)).mean() < 4
    assert leftovers(tmp_path) == []


def test_mp4_with_odd_size_is_padded_to_even(tmp_path):
    frames = moving_frames(3, 15, 21)
    save_frames(frames, tmp_path / "odd.mp4", fps=7)
    decoded, rate, _ = read_mp4(tmp_path / "odd.mp4")
    assert len(decoded) == 3 and decoded[0].shape == (16, 22, 3) and rate == 7
    # the added row/column repeats the edge
    assert np.abs(decoded[0][15].astype(int) - decoded[0][14].astype(int)).mean() < 6


def test_gif_and_webp_read_back(tmp_path):
    frames = moving_frames()
    for name in ("clip.gif", "clip.webp"):
        save_frames(frames, tmp_path / name, fps=10)
        with Image.open(tmp_path / name) as image:
            assert image.n_frames == 6 and image.size == (32, 24)
            image.seek(2)
            image.load()  # WebP reports the frame duration once a frame is decoded
            assert image.info["duration"] == 100  # ms per frame at 10 fps
            got = np.asarray(image.convert("RGB")).astype(int)
        assert np.abs(got - frames_to_uint8(frames[2]).astype(int)).mean() < 8
    assert leftovers(tmp_path) == []


def test_png_folder_and_its_replacement(tmp_path):
    frames = moving_frames()
    target = tmp_path / "frames"
    save_frames(frames, str(target) + "/", fps=7)
    names = sorted(p.name for p in target.iterdir())
    assert names == [f"frame_{i:04d}.png" for i in range(6)]
    for i, name in enumerate(names):
        np.testing.assert_array_equal(
            np.asarray(Image.open(target / name)), frames_to_uint8(frames[i])
        )
    # writing again replaces an earlier frames folder (fewer frames now)
    save_frames(frames[:2], target, fps=7)
    assert sorted(p.name for p in target.iterdir()) == ["frame_0000.png", "frame_0001.png"]
    assert leftovers(tmp_path) == []
    # a folder holding anything else is never replaced
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="holds files other than frame_"):
        save_frames(frames, other, fps=7)
    assert (other / "notes.txt").read_text() == "keep me"


def test_npy_keeps_float_frames(tmp_path):
    frames = moving_frames()
    save_frames(frames, tmp_path / "f.npy", fps=7)
    loaded = np.load(tmp_path / "f.npy")
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, frames)


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def boom(frames, target, fps):
        Path(target).write_bytes(b"half a gif")
        raise RuntimeError("disk full")

    monkeypatch.setattr(video_module, "_write_gif", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_frames(moving_frames(), tmp_path / "clip.gif", fps=7)
    assert list(tmp_path.iterdir()) == []
    # an existing output survives a failed rewrite untouched
    (tmp_path / "clip.gif").write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        save_frames(moving_frames(), tmp_path / "clip.gif", fps=7)
    assert (tmp_path / "clip.gif").read_bytes() == b"previous"
    assert leftovers(tmp_path) == []


def test_bad_outputs_are_refused_before_writing(tmp_path):
    with pytest.raises(InputError, match="output folder .* does not exist"):
        save_frames(moving_frames(), tmp_path / "missing" / "clip.mp4", fps=7)
    with pytest.raises(InputError, match=r"fps = 0: expected an integer ≥ 1"):
        save_frames(moving_frames(), tmp_path / "clip.mp4", fps=0)
    with pytest.raises(InputError, match=r"frames of shape \(6, 24, 32\)"):
        save_frames(moving_frames()[..., 0], tmp_path / "clip.mp4", fps=7)
    (tmp_path / "adir.mp4").mkdir()
    with pytest.raises(InputError, match="is a folder; expected a mp4 file"):
        save_frames(moving_frames(), tmp_path / "adir.mp4", fps=7)


def test_json_sidecar_writer(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": [1, 2], "b": None})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": [1, 2], "b": None}
    assert leftovers(tmp_path) == []
