"""``svd-run``: generate a video from one image with an exported artifact."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from svdeploy.cliutil import friendly_errors

from .backends import BACKENDS
from .run import run_to_file


@click.command(name="svd-run", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--image", "-i", "image", required=True, type=click.Path(path_type=Path),
              help="Input image (PNG, JPEG, WebP, ...). EXIF rotation is applied; transparency is "
                   "composited on white; another size is center-cropped to the artifact's aspect "
                   "ratio and scaled (Lanczos) to its size.")
@click.option("--out", "-o", "out", required=True, type=str,
              help="Output: .mp4 (H.264), .gif, .webp, .npy (float32 frames in [0,1], shape "
                   "(F,H,W,3)), or a folder of PNG frames (no extension or a trailing /). A JSON "
                   "sidecar OUT.json records parameters, seed, backend and timings.")
@click.option("--steps", type=int, default=None,
              help="Number of Euler sampling steps (≥ 1). Default: the artifact's (25 for svd).")
@click.option("--fps", type=int, default=None,
              help="Frame rate the model is conditioned on (≥ 1), also the playback rate of the "
                   "written video. Default: the artifact's (7).")
@click.option("--motion-bucket-id", type=int, default=None,
              help="Amount of motion, 0..255 (higher moves more). Default: the artifact's (127).")
@click.option("--noise-aug-strength", type=float, default=None,
              help="Noise added to the conditioning image (≥ 0); more noise lets the video drift "
                   "further from the image. Default: the artifact's (0.02).")
@click.option("--min-guidance-scale", type=float, default=None,
              help="Guidance scale of the first frame; it rises linearly to --max-guidance-scale "
                   "at the last frame. Default: the artifact's (1.0).")
@click.option("--max-guidance-scale", type=float, default=None,
              help="Guidance scale of the last frame. Artifacts exported without CFG accept only "
                   "1.0. Default: the artifact's (3.0 with CFG).")
@click.option("--seed", type=int, default=None,
              help="Seed of numpy.random.default_rng for the two noise draws. Default: a random "
                   "seed, recorded in the sidecar.")
@click.option("--backend", type=str, default=None,
              help=f"Graph backend: {', '.join(BACKENDS)}. Default: the best the artifact and this "
                   "machine allow (onnxruntime if the artifact has ONNX graphs and it imports, "
                   "else mindspore). lite runs the artifact's Lite graphs with MindSpore Lite, "
                   "in this Python when mindspore_lite imports, else see --lite-python.")
@click.option("--lite-python", "lite_python", type=str, default=None,
              envvar="SVDEPLOY_LITE_PYTHON", show_envvar=True,
              help="Python interpreter that has mindspore_lite (e.g. a Python 3.7 venv with "
                   "mindspore-lite 2.0.0): the lite backend then runs in a worker process of "
                   "that interpreter, exchanging arrays over pipes.")
@click.option("--noise", "noise_file", type=click.Path(path_type=Path), default=None,
              help="An .npz with arrays image_noise (1,3,H,W) and latents (1,F,C,h,w), standard "
                   "normal, replacing the random draws (to reproduce a run across frameworks).")
@click.option("--no-verify", is_flag=True, default=False,
              help="Skip the sha256 check of the graph files (faster start on large artifacts).")
@click.option("--quiet", "-q", is_flag=True, default=False, help="No progress bar.")
@friendly_errors
def main(artifact: Path, image: Path, out: str, steps: Optional[int], fps: Optional[int],
         motion_bucket_id: Optional[int], noise_aug_strength: Optional[float],
         min_guidance_scale: Optional[float], max_guidance_scale: Optional[float],
         seed: Optional[int], backend: Optional[str], lite_python: Optional[str],
         noise_file: Optional[Path], no_verify: bool, quiet: bool) -> None:
    """Generate a video from one image (--image) with the exported ARTIFACT directory
    (made by svd-export) and write it to --out.

    Example: svd-run artifacts/svd_xt --image photo.jpg --out clip.mp4 --seed 42
    """
    record = run_to_file(artifact, image, out, backend=backend, seed=seed, noise_file=noise_file,
                         verify_hashes=not no_verify, progress=not quiet, fps=fps,
                         motion_bucket_id=motion_bucket_id, noise_aug_strength=noise_aug_strength,
                         min_guidance_scale=min_guidance_scale,
                         max_guidance_scale=max_guidance_scale, num_inference_steps=steps,
                         lite_python=lite_python)
    click.echo(f"wrote {record['output']} ({record['num_frames']} frames, {record['width']}×"
               f"{record['height']}, {record['parameters']['fps']} fps, backend "
               f"{record['backend']}, seed {record['seed']}) and {record['sidecar']}")


if __name__ == "__main__":  # pragma: no cover
    main()
