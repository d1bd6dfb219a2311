"""``svd-data``: prepare and check the training labels (a thin layer over svdeploy.train)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import click
from tqdm.contrib.logging import logging_redirect_tqdm

from svdeploy.cliutil import friendly_errors

from . import motion


@click.group(name="svd-data", context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Prepare training data for svd-train: label videos with motion buckets, check a labels
    CSV against its videos."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")


@main.command("synth-shapes")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--clips", type=click.IntRange(min=1), required=True, help="Clips to render.")
@click.option(
    "--frames",
    type=click.IntRange(min=2, max=64),
    default=8,
    show_default=True,
    help="Frames per clip (7 fps). Fast objects are slowed so that they stay inside.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Clip i is drawn from numpy default_rng([seed, i]): the same clip for the "
    "same seed and index, on any machine.",
)
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show progress bars."
)
@friendly_errors
def synth_shapes(out: Path, clips: int, frames: int, seed: int, progress: bool) -> None:
    """Render the moving-shapes world (the demo model's training data) into OUT.

    \b
    The world: 64×64 RGB frames, a uniform gray background (level 0.10–0.40), one
    antialiased disc or square (radius / half-side 5–8 px) moving at a constant
    0.5–3.0 px/frame, fully inside the frame; its colour says where it goes:
    red → right, blue → left, green → down, yellow → up.
    \b
    Writes OUT/clips/NNNNNN.mp4 (H.264, 7 fps), OUT/shapes.csv (the ground truth of every
    clip) and OUT/labels.csv (motion buckets from the motion-buckets command's default
    options, so they mean what they mean for your own videos). OUT must not exist or be
    empty; it appears only when complete.
    """
    from .shapes import synthesize

    synthesize(out, clips, frames, seed, progress=progress)
    click.echo(f"wrote {clips} clips of {frames} frames to {out} (labels.csv, shapes.csv)")


@main.command("motion-buckets")
@click.argument("video_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Labels CSV to write (default: VIDEO_DIR/labels.csv). Written to a temporary "
    "name first, so a failed run leaves any previous file intact.",
)
@click.option(
    "--flow-fps",
    type=click.FloatRange(min=0, min_open=True),
    default=motion.FLOW_FPS,
    show_default=True,
    help="Frames per second at which frames are sampled for optical flow (SVD: 2).",
)
@click.option(
    "--analysis-size",
    type=click.IntRange(min=motion.MIN_LEVEL_SIZE),
    default=motion.ANALYSIS_SIZE,
    show_default=True,
    help="Shorter side, in pixels, that frames are downscaled to for the flow (never upscaled).",
)
@click.option(
    "--saturation",
    type=click.FloatRange(min=0, min_open=True),
    default=motion.SATURATION,
    show_default=True,
    help="Motion score (% of the short side per second) mapped to bucket 255; "
    "bucket = round(255 · min(score / saturation, 1)).",
)
@click.option(
    "--default-fps",
    type=click.FloatRange(min=0, min_open=True),
    default=motion.DEFAULT_FPS,
    show_default=True,
    help="Frame rate assumed for a video whose container stores none.",
)
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."
)
@friendly_errors
def motion_buckets(
    video_dir: Path,
    out: Optional[Path],
    flow_fps: float,
    analysis_size: int,
    saturation: float,
    default_fps: float,
    progress: bool,
) -> None:
    """Write a labels CSV (path,length,motion_bucket_id,motion_score,fps) for every video under
    VIDEO_DIR, searched recursively; paths are relative to VIDEO_DIR.

    \b
    Motion score, following SVD's data annotation (paper, Appendix C):
      * frames sampled at --flow-fps (2 per second), luma downscaled to --analysis-size;
      * dense optical flow between consecutive samples: Farnebäck's polynomial-expansion
        method (own NumPy/SciPy code; 4-level pyramid, 3 iterations per level);
      * score = mean flow magnitude over pixels and pairs, in percent of the frame's shorter
        side per second;
      * motion_bucket_id = round(255 · min(score / --saturation, 1)): deterministic,
        non-decreasing in the score, 255 from the saturation on.
    length is the number of decoded frames. Unreadable or single-frame videos are skipped with
    a warning; files without a video extension are counted and ignored.
    """
    out = out if out is not None else video_dir / "labels.csv"
    with logging_redirect_tqdm():  # warnings print above the bar instead of through it
        report = motion.label_videos(
            video_dir,
            out,
            flow_fps=flow_fps,
            analysis_size=analysis_size,
            saturation=saturation,
            default_fps=default_fps,
            progress=progress,
        )
    click.echo(
        f"wrote {len(report.labels)} row(s) to {report.out}; skipped "
        f"{len(report.unreadable)} unreadable and {len(report.too_short)} too-short "
        f"video(s), ignored {len(report.non_video)} non-video file(s)"
    )


@main.command("check")
@click.argument("metadata", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--data-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder the CSV paths are relative to (default: the CSV's folder).",
)
@click.option(
    "--frames",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Frames per training clip (dataset.frames); with --step, flags videos too "
    "short for one clip.",
)
@click.option(
    "--step",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Frame step of a training clip (dataset.step).",
)
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."
)
@friendly_errors
def check(metadata: Path, data_dir: Optional[Path], frames: int, step: int, progress: bool) -> None:
    """Validate the labels CSV METADATA and compare each row with its video: the file exists
    and decodes, its frame count equals `length`, and it holds one clip of --frames frames
    every --step frames. Decodes every video fully. Exit status 1 when a problem is found."""
    from .data import check_labels  # keeps `svd-data --help` light

    data_dir = data_dir if data_dir is not None else metadata.parent
    with logging_redirect_tqdm():
        report = check_labels(
            metadata, data_dir, min_frames=(frames - 1) * step + 1, progress=progress
        )
    for problem in report.problems:
        click.echo(f"{metadata}, line {problem.line}: {problem.path}: {problem.problem}")
    if not report.ok:
        click.echo(f"{len(report.problems)} problem(s) in {report.rows} row(s)", err=True)
        raise SystemExit(1)
    click.echo(f"all {report.rows} row(s) match their videos")
