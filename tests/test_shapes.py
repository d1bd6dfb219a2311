"""The moving-shapes world (svd-data synth-shapes): deterministic rendering, a tracker that
recovers the motion it was given, and a data set written atomically with its labels."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner

from svdeploy.train.data_cli import main as data_main
from svdeploy.train.shapes import (
    COLOURS,
    SIZE,
    coverage,
    direction_cosine,
    draw_clip,
    psnr,
    read_world,
    render_clip,
    track_object,
)


def test_clip_draws_are_deterministic_and_inside_the_frame():
    for index in range(50):
        clip = draw_clip(3, index, 8)
        assert clip == draw_clip(3, index, 8)
        assert 5 <= clip.radius <= 8 and 0.5 <= clip.speed <= 3.0
        assert 0.10 <= clip.background <= 0.40
        for t in (0, clip.frames - 1):
            x, y = clip.centre(t)
            assert clip.radius <= x <= SIZE - clip.radius and clip.radius <= y <= SIZE - clip.radius
    assert draw_clip(3, 0, 8) != draw_clip(4, 0, 8)


def test_coverage_is_antialiased_and_has_the_shape_area():
    disc = coverage("disc", 6.0, 32.3, 30.7)
    square = coverage("square", 6.0, 32.3, 30.7)
    assert abs(disc.sum() - np.pi * 36) < 1.0 and abs(square.sum() - 144) < 1e-3
    assert ((disc > 0) & (disc < 1)).any()  # partial pixels on the edge


@pytest.mark.parametrize("colour", list(COLOURS))
def test_tracker_recovers_direction_and_speed(colour):
    clip = draw_clip(1, 5, 8, speed=2.0, colour=colour)
    track = track_object(render_clip(clip))
    assert track.colour == colour
    assert direction_cosine(track, colour) > 0.999
    assert abs(np.hypot(*track.velocity()) - 2.0) < 0.05
    assert np.allclose(track.areas, track.areas[0], rtol=0.03)


def test_tracker_sees_a_wrong_direction():
    clip = draw_clip(1, 6, 8, speed=1.5, colour="red")
    frames = render_clip(clip)[::-1]  # played backwards: moves left
    assert direction_cosine(track_object(frames), "red") < -0.99
    assert psnr(frames[0], frames[0]) == float("inf") and psnr(frames[0], frames[-1]) < 40


def test_synth_shapes_writes_clips_labels_and_truth(tmp_path):
    out = tmp_path / "shapes"
    result = CliRunner().invoke(
        data_main,
        ["synth-shapes", str(out), "--clips", "3", "--frames", "6", "--seed", "2", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    with open(out / "labels.csv", newline="") as fh:
        labels = list(csv.DictReader(fh))
    world = read_world(out / "shapes.csv")
    assert (
        sorted(r["path"] for r in labels)
        == sorted(world)
        == [f"clips/00000{i}.mp4" for i in range(3)]
    )
    assert all(int(r["length"]) == 6 and 0 <= int(r["motion_bucket_id"]) <= 255 for r in labels)
    written, drawn = world["clips/000001.mp4"], draw_clip(2, 1, 6)  # 6 decimals in the CSV
    assert (written.shape, written.colour, written.frames) == (
        drawn.shape,
        drawn.colour,
        drawn.frames,
    )
    assert np.allclose(
        [written.radius, written.speed, written.x0, written.y0, written.background],
        [drawn.radius, drawn.speed, drawn.x0, drawn.y0, drawn.background],
        atol=1e-5,
    )
    again = CliRunner().invoke(data_main, ["synth-shapes", str(out), "--clips", "1"])
    assert again.exit_code == 2 and "already exists" in again.output
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder


def test_faster_clips_get_higher_buckets(tmp_path):
    from svdeploy.train.shapes import bucket_for_speed

    clip = draw_clip(0, 0, 8, speed=1.0, colour="red")
    assert bucket_for_speed(clip, 1.0, tmp_path) < bucket_for_speed(clip, 2.5, tmp_path)
