"""Motion scores and motion_bucket_id labels (svdeploy.train.motion, svd-data motion-buckets)."""

from __future__ import annotations

import csv
import math
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

from svdeploy.errors import InputError
from svdeploy.train import motion
from svdeploy.train.data import read_labels
from svdeploy.train.data_cli import main as svd_data
from svdref.videos import (
    MOTION_SPEEDS,
    count_frames,
    make_dataset,
    moving_square_frames,
    write_video,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("videos"))


def _texture(seed: int = 0, shape=(96, 128)) -> np.ndarray:
    image = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 2.0)
    return (image - image.min()) / (image.max() - image.min())


# ---- flow -----------------------------------------------------------------------------------
def test_polynomial_expansion_recovers_a_quadratic():
    rows, cols = np.mgrid[0:40, 0:50].astype(np.float64)
    a_xx, a_yy, a_xy, b_x, b_y = 0.003, -0.002, 0.0015, 0.05, -0.03
    image = 0.2 + b_x * cols + b_y * rows + a_xx * cols**2 + a_yy * rows**2 + 2 * a_xy * cols * rows
    expansion = motion.polynomial_expansion(image)
    inner = (slice(8, -8), slice(8, -8))
    # around pixel (x0, y0) the linear term is b + 2 A (x0, y0)
    np.testing.assert_allclose(expansion[inner][..., 2], a_xx, atol=1e-9)
    np.testing.assert_allclose(expansion[inner][..., 3], a_yy, atol=1e-9)
    np.testing.assert_allclose(expansion[inner][..., 4], a_xy, atol=1e-9)
    np.testing.assert_allclose(
        expansion[inner][..., 0], (b_x + 2 * a_xx * cols + 2 * a_xy * rows)[inner], atol=1e-8
    )
    np.testing.assert_allclose(
        expansion[inner][..., 1], (b_y + 2 * a_yy * rows + 2 * a_xy * cols)[inner], atol=1e-8
    )


@pytest.mark.parametrize("dx, dy", [(0.5, -0.25), (2.0, -1.0), (7.0, 3.0)])
def test_flow_recovers_a_known_translation(dx, dy):
    first = _texture()
    second = ndimage.shift(first, (dy, dx), order=3, mode="reflect")  # content moves by (dx, dy)
    flow = motion.farneback_flow(first, second)
    inner = flow[16:-16, 16:-16]
    assert np.abs(inner[..., 0] - dx).mean() < 0.1
    assert np.abs(inner[..., 1] - dy).mean() < 0.1


def test_flow_of_identical_frames_is_zero():
    image = _texture(1)
    assert motion.mean_flow_magnitude(motion.farneback_flow(image, image)) < 1e-9


def test_flow_keeps_the_background_still_around_a_moving_object():
    # 12 px in one step: only the pyramid finds it, and the coarse levels must not drag it
    # onto the still background
    frames = moving_square_frames(8, 64, 96, speed=3.0, seed=2)[..., 0] / 255.0
    flow = motion.farneback_flow(frames[0], frames[4])
    square = flow[24:40, 14:30]  # inside the square in both frames (it spans 12..32)
    assert abs(np.median(square[..., 0]) - 12.0) < 0.5
    assert abs(np.median(square[..., 1])) < 0.5
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    # the square spans rows 22..42 and columns 0..32 over the two frames
    for background in (magnitude[:14], magnitude[50:], magnitude[:, 44:]):
        assert np.percentile(background, 95) < 0.5


# ---- score → bucket -------------------------------------------------------------------------
def test_bucket_mapping_is_monotonic_and_saturates():
    scores = np.linspace(0.0, 3 * motion.SATURATION, 301)
    buckets = [motion.score_to_bucket(float(s)) for s in scores]
    assert buckets[0] == 0
    assert all(0 <= b <= 255 for b in buckets)
    assert all(b2 >= b1 for b1, b2 in zip(buckets, buckets[1:]))
    assert motion.score_to_bucket(motion.SATURATION) == 255
    assert motion.score_to_bucket(10 * motion.SATURATION) == 255
    assert motion.score_to_bucket(motion.SATURATION / 2) == 128  # 127.5 rounds to the even 128
    assert motion.score_to_bucket(5.0, saturation=10.0) == 128
    fine = [motion.score_to_bucket(float(s)) for s in np.linspace(0.0, motion.SATURATION, 2551)]
    assert sorted(set(fine)) == list(range(256))  # every bucket is reachable


@pytest.mark.parametrize(
    "score, saturation", [(-1.0, 50.0), (math.nan, 50.0), (math.inf, 50.0), (1.0, 0.0), (1.0, -5.0)]
)
def test_bucket_mapping_rejects_bad_values(score, saturation):
    with pytest.raises(InputError, match="expected"):
        motion.score_to_bucket(score, saturation)


def test_stream_fps_reads_the_container_else_the_default():
    ntsc = SimpleNamespace(average_rate=Fraction(30000, 1001), base_rate=None, guessed_rate=None)
    assert motion.stream_fps(ntsc, 7.0) == (pytest.approx(29.97002997), True)
    only_base = SimpleNamespace(average_rate=None, base_rate=Fraction(25), guessed_rate=None)
    assert motion.stream_fps(only_base, 7.0) == (25.0, True)
    none = SimpleNamespace(average_rate=None, base_rate=Fraction(0), guessed_rate=None)
    assert motion.stream_fps(none, 7.0) == (7.0, False)


# ---- videos ---------------------------------------------------------------------------------
def test_motion_ranks_still_below_slow_below_fast(dataset):
    measured = {name: motion.measure_video(dataset.root / name) for name in MOTION_SPEEDS}
    scores = [measured[name].score for name in ("still.mp4", "nested/slow.mp4", "fast.mp4")]
    buckets = [measured[name].bucket() for name in ("still.mp4", "nested/slow.mp4", "fast.mp4")]
    assert scores[0] < 0.1 * scores[1]
    assert scores[1] < scores[2]
    assert buckets[0] == 0 and buckets[0] < buckets[1] < buckets[2] < 255
    for name, m in measured.items():
        assert m.length == count_frames(dataset.root / name) == 24
        assert m.fps == 8.0 and m.fps_from_file
        assert m.pairs == 5  # 24 frames at 8 fps sampled at 2 fps: frames 0, 4, ..., 20


def test_motion_score_does_not_depend_on_resolution_above_the_analysis_size(tmp_path):
    # one scene at 2× and 4× the size: both are analysed at a 128-px short side
    scene = moving_square_frames(12, 64, 96, speed=2.0, square=20, seed=5)
    scores = []
    for factor in (2, 4):
        frames = np.repeat(np.repeat(scene, factor, axis=1), factor, axis=2)
        write_video(tmp_path / f"x{factor}.mp4", frames, fps=8)
        scores.append(motion.measure_video(tmp_path / f"x{factor}.mp4").score)
    assert scores[0] > 1.0
    assert scores[1] == pytest.approx(scores[0], rel=0.05)


def test_motion_score_is_per_second_whatever_the_frame_rate(tmp_path):
    # the same motion in pixels per second, recorded at 8 and at 16 fps
    write_video(tmp_path / "fps8.mp4", moving_square_frames(13, 64, 96, speed=2.0, seed=6), fps=8)
    write_video(tmp_path / "fps16.mp4", moving_square_frames(25, 64, 96, speed=1.0, seed=6), fps=16)
    at8 = motion.measure_video(tmp_path / "fps8.mp4")
    at16 = motion.measure_video(tmp_path / "fps16.mp4")
    assert (at8.pairs, at16.pairs) == (3, 3)
    assert at8.score > 1.0
    assert at16.score == pytest.approx(at8.score, rel=0.05)
    # sampled twice as often, the displacements halve but the score stays per second
    at16_fine = motion.measure_video(tmp_path / "fps16.mp4", flow_fps=4.0)
    assert at16_fine.pairs == 6
    assert at16_fine.score == pytest.approx(at16.score, rel=0.15)


def test_video_shorter_than_one_sampling_interval_uses_first_and_last_frame(dataset):
    measured = motion.measure_video(dataset.root / dataset.short)  # 3 frames at 12 fps
    assert measured.length == 3 and measured.pairs == 1


def test_single_frame_video_is_too_short(tmp_path):
    write_video(tmp_path / "one.mp4", moving_square_frames(1, 32, 48, 0.0), fps=8)
    with pytest.raises(motion.VideoTooShortError, match="1 frame"):
        motion.measure_video(tmp_path / "one.mp4")


def test_label_videos_recurses_and_counts_skips(dataset, tmp_path):
    out = tmp_path / "labels.csv"
    report = motion.label_videos(dataset.root, out, progress=False)
    labelled = [path for path, _, _ in report.labels]
    assert labelled == sorted(dataset.frame_counts)  # every readable video, sorted
    assert "nested/slow.mp4" in labelled and "nested/index_c.mp4" in labelled
    assert list(report.unreadable) == [dataset.corrupt]
    assert sorted(report.non_video) == ["labels.csv", dataset.non_video]
    assert [p.name for p in tmp_path.iterdir()] == ["labels.csv"]  # no temporary file left


def test_failed_labelling_leaves_the_previous_file(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "broken.mp4").write_bytes(b"\x00" * 512)
    out = tmp_path / "labels.csv"
    out.write_text("previous\n")
    with pytest.raises(InputError, match="none of the 1 video"):
        motion.label_videos(videos, out, progress=False)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv", "videos"]


# ---- svd-data -------------------------------------------------------------------------------
def test_cli_motion_buckets_writes_a_valid_csv(dataset, tmp_path):
    out = tmp_path / "labels.csv"
    result = CliRunner().invoke(
        svd_data, ["motion-buckets", str(dataset.root), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "1 unreadable" in result.output and "2 non-video" in result.output
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", "length", "motion_bucket_id", "motion_score", "fps"]
    table = {row[0]: row for row in rows[1:]}
    assert set(table) == set(dataset.frame_counts)
    for path, row in table.items():
        assert int(row[1]) == count_frames(dataset.root / path)  # real decoded frame count
        assert 0 <= int(row[2]) <= 255
        assert float(row[4]) == dataset.fps[path]
    bucket = {name: int(table[name][2]) for name in MOTION_SPEEDS}
    assert bucket["still.mp4"] < bucket["nested/slow.mp4"] < bucket["fast.mp4"]
    # the file is what the training dataset reads
    assert [r.path for r in read_labels(out)] == [row[0] for row in rows[1:]]


def test_cli_motion_buckets_defaults_to_a_csv_in_the_folder(tmp_path):
    write_video(tmp_path / "a.mp4", moving_square_frames(6, 32, 48, 1.0), fps=4)
    result = CliRunner().invoke(svd_data, ["motion-buckets", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert [r.path for r in read_labels(tmp_path / "labels.csv")] == ["a.mp4"]


def test_cli_motion_buckets_errors_are_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    result = CliRunner().invoke(svd_data, ["motion-buckets", str(empty), "--no-progress"])
    assert result.exit_code == 2
    assert "error: no videos under" in result.output and "1 other file" in result.output
    result = CliRunner().invoke(svd_data, ["motion-buckets", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = CliRunner().invoke(svd_data, ["motion-buckets", str(empty), "--saturation", "0"])
    assert result.exit_code == 2 and "--saturation" in result.output


def test_cli_check_reports_problems_and_passes_good_labels(dataset, tmp_path):
    result = CliRunner().invoke(
        svd_data, ["check", str(dataset.csv_path), "--frames", "4", "--step", "5", "--no-progress"]
    )
    assert result.exit_code == 1
    for name in (dataset.corrupt, dataset.missing, dataset.short):
        assert name in result.output
    assert "3 problem(s) in 9 row(s)" in result.output
    out = tmp_path / "labels.csv"
    motion.label_videos(dataset.root, out, progress=False)
    result = CliRunner().invoke(
        svd_data, ["check", str(out), "--data-dir", str(dataset.root), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "all 7 row(s) match" in result.output


def test_cli_check_finds_a_wrong_length(dataset, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,length,motion_bucket_id\nindex_a.mp4,41,3\n")
    result = CliRunner().invoke(
        svd_data, ["check", str(labels), "--data-dir", str(dataset.root), "--no-progress"]
    )
    assert result.exit_code == 1
    assert "line 2: index_a.mp4: length 41 in the CSV, 40 frames in the file" in result.output


@pytest.mark.parametrize("command", [[], ["motion-buckets"], ["check"]])
def test_cli_help_explains_every_option(command):
    result = CliRunner().invoke(svd_data, command + ["--help"])
    assert result.exit_code == 0
    group_or_command = svd_data if not command else svd_data.commands[command[0]]
    for param in group_or_command.params:
        for opt in param.opts:
            if opt.startswith("-"):
                assert opt in result.output
        if param.param_type_name == "option":
            assert param.help, f"{param.name} has no help"
    if not command:
        assert "motion-buckets" in result.output and "check" in result.output
    if command == ["motion-buckets"]:
        assert "Farnebäck" in result.output and "2 per second" in result.output
