"""svd-train as a command: a run killed with SIGKILL resumes where its last checkpoint left off
(same steps, same data, same numbers), then the result goes through svd-export and svd-run.

Tiny preset networks, 16×16 clips of 4 frames; every step writes a row to train_log.csv, which
is how the test knows when to kill the first run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from svdeploy.train import checkpoint as ckpt
from svdeploy.train.data import VideoDataset, VideoDatasetConfig
from svdeploy.train.trainer import LOG_FILE, read_log
from svdref.videos import moving_square_frames, write_labels, write_video

pytestmark = pytest.mark.slow

SIZE, FRAMES, STEP = 16, 4, 2
TOTAL, INTERVAL, KILL_AFTER = 8, 4, 6  # checkpoints at 4 and 8; killed once step 6 is logged


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume_videos")
    for i, speed in enumerate((1.0, 2.5, 4.0)):
        write_video(
            root / f"clip{i}.mp4", moving_square_frames(18, 32, 32, speed, square=9, seed=i), 8
        )
    write_labels(root / "labels.csv", [(f"clip{i}.mp4", 18, 40 * (i + 1)) for i in range(3)])
    return root


def command(videos: Path, out: Path, *extra: str) -> List[str]:
    return [
        sys.executable,
        "-m",
        "svdeploy.train.cli",
        "--svd-config",
        "tiny",
        "--no-progress",
        "--train.random_init",
        "true",
        "--train.output_dir",
        str(out),
        "--train.dataset.init_args.data_dir",
        str(videos),
        "--train.dataset.init_args.metadata",
        str(videos / "labels.csv"),
        "--train.dataset.init_args.frames",
        str(FRAMES),
        "--train.dataset.init_args.step",
        str(STEP),
        "--train.dataset.init_args.height",
        str(SIZE),
        "--train.dataset.init_args.width",
        str(SIZE),
        "--train.max_steps",
        str(TOTAL),
        "--train.save_ckpt_interval",
        str(INTERVAL),
        "--train.ckpt_max_keep",
        "null",
        "--train.settings.gradient_accumulation_steps",
        "1",
        "--train.scheduler.warmup_steps",
        "2",
        "--train.scheduler.lr",
        "1e-3",
        "--environment.compile_cache",
        "true",
        *extra,
    ]


def logged_steps(path: Path) -> List[Dict[str, str]]:
    try:
        return read_log(path)
    except (OSError, ValueError, KeyError):
        return []  # caught mid-write


@pytest.fixture(scope="module")
def resumed(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    env = dict(os.environ)
    first = subprocess.Popen(
        command(videos, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    deadline = time.monotonic() + 400
    try:
        while True:
            rows = logged_steps(out / LOG_FILE)
            if rows and int(rows[-1]["step"]) >= KILL_AFTER:
                break
            if first.poll() is not None:
                pytest.fail(
                    "the first run ended before it could be killed:\n"
                    + first.stdout.read().decode(errors="replace")[-3000:]
                )
            if time.monotonic() > deadline:
                pytest.fail("the first run did not reach step 6 in 400 s")
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    killed_rows = logged_steps(out / LOG_FILE)
    killed_checkpoints = [s for s, _ in ckpt.list_checkpoints(out)]
    second = subprocess.run(
        command(videos, out, "--resume"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        timeout=400,
    )
    output = second.stdout.decode(errors="replace")
    assert second.returncode == 0, output[-3000:]
    return {
        "out": out,
        "killed_rows": killed_rows,
        "killed_checkpoints": killed_checkpoints,
        "output": output,
        "first_rc": first.returncode,
    }


def expected_clips(videos: Path, count: int) -> List[str]:
    """The clips an uninterrupted run takes: the dataset's own order, read without training."""
    dataset = VideoDataset(
        VideoDatasetConfig(
            data_dir=str(videos),
            metadata=str(videos / "labels.csv"),
            frames=FRAMES,
            step=STEP,
            height=SIZE,
            width=SIZE,
        )
    )
    clips: List[str] = []
    while len(clips) < count:
        clips.extend(f"{s.path}@{s.start}" for s in dataset)
    return clips[:count]


def test_killed_run_was_really_interrupted(resumed):
    assert resumed["first_rc"] == -signal.SIGKILL
    assert resumed["killed_checkpoints"] == [INTERVAL]  # step 8 was never reached
    assert max(int(r["step"]) for r in resumed["killed_rows"]) >= KILL_AFTER


def test_resume_continues_with_the_same_steps_data_and_numbers(resumed, videos):
    out, killed = resumed["out"], resumed["killed_rows"]
    assert f"trained steps {INTERVAL} → {TOTAL} of {TOTAL}" in resumed["output"]
    rows = read_log(out / LOG_FILE)
    assert [int(r["step"]) for r in rows] == list(range(1, TOTAL + 1))  # each step once
    # the steps before the checkpoint are kept as they were; those after it were redone and,
    # being deterministic, came out bit for bit the same (weights, optimizer and draws restored)
    by_step = {int(r["step"]): r for r in killed}
    for row in rows:
        step = int(row["step"])
        if step in by_step:
            for column in ("loss", "grad_norm", "lr", "clips", "samples_seen"):
                assert row[column] == by_step[step][column], (step, column)
    assert len(by_step) > INTERVAL  # some steps after the checkpoint were compared
    # the data position continued: the clips are the dataset's own sequence
    assert [r["clips"] for r in rows] == expected_clips(videos, TOTAL)
    losses = [float(r["loss"]) for r in rows]
    assert all(np.isfinite(losses))


def test_no_checkpoint_is_lost_and_the_last_holds_the_final_state(resumed, videos):
    out = resumed["out"]
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [INTERVAL, TOTAL]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    state = ckpt.read_state(out / "checkpoints" / f"step-{TOTAL:08d}")
    assert state["step"] == TOTAL and state["samples_seen"] == TOTAL
    dataset = VideoDataset(
        VideoDatasetConfig(
            data_dir=str(videos),
            metadata=str(videos / "labels.csv"),
            frames=FRAMES,
            step=STEP,
            height=SIZE,
            width=SIZE,
        )
    )
    taken = 0
    stream = iter(dataset)
    while taken < TOTAL:
        try:
            next(stream)
            taken += 1
        except StopIteration:
            stream = iter(dataset)
    assert (state["dataset"]["epoch"], state["dataset"]["index"]) == dataset.position
    # the checkpoint of step 4 was not rewritten by the resumed run
    first = ckpt.read_state(out / "checkpoints" / f"step-{INTERVAL:08d}")
    assert first["step"] == INTERVAL and first["samples_seen"] == INTERVAL


def test_resume_refuses_other_trained_parameters(resumed, videos):
    """The optimizer state names the trained tensors: resuming a temporal_only run with the
    full U-Net is an error that says why, not a silent restart."""
    result = subprocess.run(
        command(
            videos,
            resumed["out"],
            "--resume",
            "--train.temporal_only",
            "false",
            "--train.max_steps",
            str(TOTAL + 1),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=400,
    )
    text = result.stdout.decode(errors="replace")
    assert result.returncode == 2, text[-2000:]
    assert "does not match the trained parameters" in text and "temporal_only" in text


def test_trained_checkpoint_exports_and_runs(resumed, tmp_path):
    """train → svd-export → svd-run on the tiny preset."""
    export = pytest.importorskip("svdeploy.export")
    from PIL import Image

    from svdeploy.runtime.run import run_to_file

    final = resumed["out"] / "checkpoints" / f"step-{TOTAL:08d}"
    artifact = tmp_path / "artifact"
    export.export_artifact(final, artifact, frames=FRAMES, height=SIZE, width=SIZE, progress=False)
    image = tmp_path / "first.png"
    Image.fromarray(moving_square_frames(1, SIZE, SIZE, 0.0, square=6)[0]).save(image)
    video = tmp_path / "video.gif"
    record = run_to_file(artifact, image, video, seed=3, progress=False)
    assert video.is_file() and record["num_frames"] == FRAMES
    assert (record["height"], record["width"]) == (SIZE, SIZE)
    frames = Image.open(video)
    assert frames.n_frames == FRAMES and frames.size == (SIZE, SIZE)
