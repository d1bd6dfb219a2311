"""The demo model (issue 12): its recipe, its packaging, the `demo` checkpoint name, the quality
measurements, and the shipped weights generating the world's motion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from svdeploy.benchmarks.quality import SPEEDS, QualityReport, eval_clips, evaluate, score_video
from svdeploy.demo import sheet, side_by_side
from svdeploy.demo_model import loss_curve, packaged_dir, write_float16
from svdeploy.models.loading import resolve_checkpoint_dir
from svdeploy.train.shapes import render_clip, render_frame

ROOT = Path(__file__).resolve().parents[1]


# ---- the measurements of svd-bench quality ---------------------------------------------------
def test_a_perfect_world_video_meets_every_target():
    clips = eval_clips(6, 8)
    buckets = {"slow": 23, "fast": 60}
    report = QualityReport("exact", buckets)
    for i, clip in enumerate(clips):
        image = render_frame(clip, 0)
        for name in buckets:
            video = render_clip(replace(clip, speed=SPEEDS[name]))  # the world itself
            report.scores.append(score_video(video, clip, image, name, i))
    summary = report.summary()
    for name in SPEEDS:
        assert summary[name]["cosine_median"] > 0.999
        assert abs(summary[name]["speed_ratio_median"] - 1.0) < 0.05
        assert summary[name]["psnr0_median"] == float("inf")
        assert summary[name]["area_share"] == 1.0
        assert all(summary[name][k] for k in ("cosine_ok", "speed_ratio_ok", "psnr0_ok", "area_ok"))
    assert summary["faster_ok"] and summary["faster_share"] == 1.0


def test_wrong_way_static_and_vanishing_videos_fail_their_targets():
    clip = eval_clips(1, 8)[0]
    image = render_frame(clip, 0)
    backwards = render_clip(replace(clip, speed=-1.0))
    score = score_video(backwards, clip, image, "slow", 0)
    assert score.cosine < -0.99 and abs(score.speed_ratio - 1.0) < 0.05
    static = np.repeat(image[None], 8, axis=0)
    assert score_video(static, clip, image, "fast", 0).speed < 1e-6
    faded = static.copy()
    faded[4:] = clip.background  # the object vanishes half way
    assert min(score_video(faded, clip, image, "fast", 0).area_ratios) < 0.6


def test_evaluate_uses_the_buckets_svd_data_gives_slow_and_fast_clips():
    seen = []

    def generate(image, bucket, seed):
        seen.append(bucket)
        return np.repeat(image[None], 8, axis=0)

    report = evaluate(generate, "static", images=2, frames=8)
    slow, fast = report.buckets["slow"], report.buckets["fast"]
    assert 0 < slow < fast <= 255 and seen == [slow, fast] * 2
    summary = report.summary()
    assert not summary["faster_ok"] and not summary["fast"]["speed_ratio_ok"]


# ---- packaging and the `demo` name -----------------------------------------------------------
def test_demo_names_the_shipped_checkpoint_unless_a_folder_of_that_name_exists(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint_dir("demo") == packaged_dir()
    assert (packaged_dir() / "config.yaml").is_file()
    (tmp_path / "demo").mkdir()
    assert resolve_checkpoint_dir("demo") == Path("demo")
    assert resolve_checkpoint_dir("other") == Path("other")


def test_float16_storage_is_read_back_as_float32_and_refuses_overflow(tmp_path):
    from svdeploy.errors import CheckpointError
    from svdeploy.models.weights_io import SafetensorsFile, SafetensorsWriter

    rng = np.random.default_rng(0)
    values = {
        "a.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "b.bias": rng.standard_normal(5).astype(np.float32),
    }
    src = tmp_path / "src.safetensors"
    with SafetensorsWriter(src, [(k, v.shape, "F32") for k, v in values.items()]) as w:
        for k, v in values.items():
            w.write(k, v)
    half = tmp_path / "half.safetensors"
    write_float16(src, half)
    with SafetensorsFile(half) as f:
        for k, v in values.items():
            assert f.infos[k].dtype == "F16"
            back = f.read_float32(k)
            assert back.dtype == np.float32 and np.allclose(back, v, rtol=1e-3, atol=1e-3)
    big = tmp_path / "big.safetensors"
    with SafetensorsWriter(big, [("x", (1,), "F32")]) as w:
        w.write("x", np.array([1e6], np.float32))
    with pytest.raises(CheckpointError, match="x: .*does not fit float16"):
        write_float16(big, tmp_path / "big16.safetensors")


def test_loss_curve_prints_one_column_per_bucket_falling():
    text = loss_curve(list(np.linspace(1.0, 0.1, 200)), width=40, height=6)
    rows = text.splitlines()
    assert len(rows) == 6 + 2
    plot = [r.split("|", 1)[1] for r in rows[:6]]
    assert all(len(p) == 40 for p in plot)
    assert plot[0][0] == "*" and plot[-1][-1] == "*"  # highest first, lowest last


def test_sheet_and_side_by_side_layout():
    image = np.zeros((64, 64, 3), np.uint8)
    videos = {
        "slow": np.full((8, 64, 64, 3), 10, np.uint8),
        "fast": np.full((8, 64, 64, 3), 20, np.uint8),
    }
    grid = sheet(image, videos)
    assert grid.shape[0] > 2 * 64 * 3 and grid.shape[1] > 9 * 64 * 3
    assert (grid == 20).any() and (grid == 10).any()
    both = side_by_side(list(videos.values()))
    assert both.shape[0] == 8 and both.shape[2] > 2 * 64 * 3


# ---- the shipped model -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_artifact(tmp_path_factory):
    from svdeploy.export import export_artifact

    out = tmp_path_factory.mktemp("demo") / "artifact"
    export_artifact("demo", out, formats=["onnx"], validate=False, progress=False)
    return out


def test_shipped_demo_model_moves_the_object_the_right_way(demo_artifact):
    """Four fresh images (a seed training never used): at the fast bucket the object moves the
    way its colour says, and faster than at the slow bucket. The bounds are looser than the
    issue's targets, which the shipped model does not all meet (MODEL.md has its figures): a
    model that had not learned motion (the 2-step placeholder shipped before) fails them."""
    from svdeploy.benchmarks.quality import pipeline_generator

    with open(packaged_dir() / "world.json", encoding="utf-8") as fh:
        shipped = json.load(fh)["buckets"]
    report = evaluate(
        pipeline_generator(demo_artifact, "onnxruntime"),
        "onnxruntime",
        images=4,
        frames=8,
        seed=2024,
        buckets=shipped,
    )
    fast = [s for s in report.scores if s.bucket == "fast"]
    assert sum(s.cosine >= 0.7 for s in fast) >= 3, [round(s.cosine, 3) for s in fast]
    summary = report.summary()
    assert summary["faster_share"] >= 0.75, summary
    # frame 0 through the demo's small VAE: 18.9 dB on these 4 images, 21.1 dB median on the
    # 16 of svd-bench quality (the target, 26 dB, is not met: MODEL.md)
    assert summary["fast"]["psnr0_median"] >= 16.0, summary


def test_svd_bench_quality_writes_its_report(demo_artifact, tmp_path):
    from click.testing import CliRunner

    from svdeploy.benchmarks.cli import main

    out = tmp_path / "q"
    result = CliRunner().invoke(
        main,
        [
            "quality",
            "--artifact",
            str(demo_artifact),
            "--images",
            "1",
            "--backends",
            "onnxruntime",
            "--steps",
            "2",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "quality.json").read_text())
    (backend,) = data["backends"]
    assert backend["summary"]["backend"] == "onnxruntime" and len(backend["videos"]) == 2
    assert "| onnxruntime | slow" in (out / "quality.md").read_text()


# ---- the recipe ------------------------------------------------------------------------------
TINY_BUDGET = [
    "--clips",
    "6",
    "--no-progress",
    "--train.max_steps",
    "2",
    "--train.autoencoder.steps",
    "2",
    "--train.autoencoder.scale_samples",
    "3",
    "--train.dataloader.batch_size",
    "2",
    "--train.scheduler.warmup_steps",
    "1",
    "--train.autoencoder.warmup_steps",
    "1",
    "--train.autoencoder.decoder_steps",
    "1",
]


def _recipe(work: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONHASHSEED="0")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "svdeploy.demo_model",
            "--work",
            str(work),
            "--out",
            str(work / "model"),
            *TINY_BUDGET,
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(work.parent),
        timeout=900,
    )


@pytest.mark.slow
def test_recipe_on_a_tiny_budget_runs_every_stage_and_repeats_exactly(tmp_path):
    runs = [_recipe(tmp_path / name) for name in ("one", "two")]
    runs.append(_recipe(tmp_path / "joint-only", "--train.autoencoder.decoder_steps", "0"))
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
        assert "[3/3] demo model" in run.stdout and "autoencoder loss (2 steps" in run.stdout
    assert "autoencoder (decoder) loss (1 steps" in runs[0].stdout
    one, two = (tmp_path / name for name in ("one", "two"))
    stage = json.loads((one / "run" / "autoencoder" / "stage.json").read_text())
    assert stage["steps"] == 3 and stage["scale_factor"] != 1.0  # the VAE stage set the scale
    for part in ("weights.safetensors", "config.yaml", "world.json"):
        assert (one / "model" / part).read_bytes() == (two / "model" / part).read_bytes(), part
    from svdeploy.models.weights_io import SafetensorsFile

    with (
        SafetensorsFile(one / "model" / "weights.safetensors") as trained,
        SafetensorsFile(one / "run" / "random_init" / "weights.safetensors") as start,
    ):
        moved = [
            n
            for n in trained.infos
            if n.startswith(("model.", "first_stage_model."))
            # the shipped file is float16: compare with the start rounded the same way
            and not np.array_equal(
                trained.read_float32(n), start.read_float32(n).astype(np.float16).astype(np.float32)
            )
        ]
    assert any(n.startswith("model.") for n in moved)  # the whole U-Net trains
    assert any(n.startswith("first_stage_model.decoder") for n in moved)  # and the VAE

    # the decoder-only phase changes the decoder and nothing else: not the encoder, not the
    # latent scale, not a single U-Net weight (the U-Net stage reads only the encoder)
    with (
        SafetensorsFile(one / "model" / "weights.safetensors") as refined,
        SafetensorsFile(tmp_path / "joint-only" / "model" / "weights.safetensors") as joint,
    ):
        changed = {n for n in refined.infos if not np.array_equal(refined.read(n), joint.read(n))}
    assert changed and all(n.startswith("first_stage_model.decoder.") for n in changed), changed
    for name in ("config.yaml", "world.json"):
        assert (one / "model" / name).read_bytes() == (
            tmp_path / "joint-only" / "model" / name
        ).read_bytes()
