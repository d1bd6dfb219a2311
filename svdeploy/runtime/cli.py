"""``svd-run``: generate a video from one image with an exported artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import click

from svdeploy.cliutil import friendly_errors, mindspore_dumps_elsewhere, run_program

from .backends import BACKENDS, PRECISIONS
from .run import run_to_file
from .video import OUTPUT_KINDS


@click.command(name="svd-run", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--image",
    "-i",
    "images",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path),
    help="Input image (PNG, JPEG, WebP, ...). EXIF rotation is applied; transparency is "
    "composited on white; another size is center-cropped to the artifact's aspect "
    "ratio and scaled (Lanczos) to its size. Repeat it for a batch: image i runs "
    "with seed S+i, --out is then a folder receiving OUT/<image stem>.<format>.",
)
@click.option(
    "--out",
    "-o",
    "out",
    required=True,
    type=str,
    help="Output: .mp4 (H.264), .gif, .webp, .npy (float32 frames in [0,1], shape "
    "(F,H,W,3)), or a folder of PNG frames (no extension or a trailing /). A JSON "
    "sidecar OUT.json records parameters, seed, backend and timings. Both are written under "
    "temporary names and appear together when complete; an existing OUT or OUT.json "
    "is refused unless --overwrite. OUT may not be the input image or noise file, "
    "nor lie inside the artifact.",
)
@click.option(
    "--steps",
    type=int,
    default=None,
    help="Number of Euler sampling steps (≥ 1). Default: the artifact's (25 for svd).",
)
@click.option(
    "--fps",
    type=int,
    default=None,
    help="Frame rate the model is conditioned on (1..120; .gif ≤ 100), also the "
    "playback rate of the written video. Default: the artifact's (7).",
)
@click.option(
    "--motion-bucket-id",
    type=int,
    default=None,
    help="Amount of motion, 0..255 (higher moves more). Default: the artifact's (127).",
)
@click.option(
    "--noise-aug-strength",
    type=float,
    default=None,
    help="Noise added to the conditioning image (≥ 0); more noise lets the video drift "
    "further from the image. Default: the artifact's (0.02).",
)
@click.option(
    "--min-guidance-scale",
    type=float,
    default=None,
    help="Guidance scale of the first frame; it rises linearly to --max-guidance-scale "
    "at the last frame. Default: the artifact's (1.0).",
)
@click.option(
    "--max-guidance-scale",
    type=float,
    default=None,
    help="Guidance scale of the last frame. Artifacts exported without CFG accept only "
    "1.0. Default: the artifact's (3.0 with CFG).",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed of numpy.random.default_rng for the two noise draws. Default: a random "
    "seed, recorded in the sidecar.",
)
@click.option(
    "--backend",
    type=str,
    default=None,
    help=f"Graph backend: {', '.join(BACKENDS)}. Default: the best the artifact and this "
    "machine allow, fastest first as measured: openvino, onnxruntime (both run "
    "the ONNX graphs), mindspore, lite (MindIR). openvino needs the openvino "
    "package. lite runs the artifact's Lite graphs (else its MindIR) with "
    "MindSpore Lite, in this Python when mindspore_lite imports, else see "
    "--lite-python.",
)
@click.option(
    "--lite-python",
    "lite_python",
    type=str,
    default=None,
    envvar="SVDEPLOY_LITE_PYTHON",
    show_envvar=True,
    help="Python interpreter that has mindspore_lite (e.g. a Python 3.7 venv with "
    "mindspore-lite 2.0.0): the lite backend then runs in a worker process of "
    "that interpreter, exchanging arrays over pipes.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="Compute precision. fp32: exact to the graphs' parity with diffusers. bf16: "
    "bfloat16 matmuls/convolutions (openvino only, on a CPU with native bf16: "
    "AVX512_BF16 or AMX; refused elsewhere); 1.3-2.7x faster on the U-Net, with "
    "a model-dependent error (see svdeploy/runtime/README.md). auto: fp32 on "
    "openvino and onnxruntime, the exported precision on mindspore/lite. The "
    "precision used is recorded in the sidecar.",
)
@click.option(
    "--noise",
    "noise_file",
    type=click.Path(path_type=Path),
    default=None,
    help="An .npz with arrays image_noise (1,3,H,W) and latents (1,F,C,h,w), standard "
    "normal, replacing the random draws (to reproduce a run across frameworks).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(OUTPUT_KINDS),
    default=None,
    help="Kind of each video when --out is a folder (several --image, or one image "
    "written into a folder): mp4, gif, webp, npy, or png (a folder of frames per "
    "image). Default with several images: mp4.",
)
@click.option(
    "--clips",
    type=int,
    default=1,
    show_default=True,
    help="Chain N clips: each clip is conditioned on the previous clip's last frame "
    "(handed over as a latent), the CLIP embedding stays the input image's; one "
    "video of N·(F−1)+1 frames. Clip 0 uses --seed S as a single run does, clip k "
    "numpy.random.default_rng([S, k]).",
)
@click.option(
    "--decode-overlap",
    type=int,
    default=0,
    show_default=True,
    help="Decode with the artifact's chunk graph in windows overlapping by K frames "
    "(0 ≤ K < decode chunk), blended linearly, to hide seams at chunk borders. "
    "Costs more decoder calls: (T − chunk)/(chunk − K) + 1 instead of T/chunk.",
)
@click.option(
    "--plan",
    "plan_only",
    is_flag=True,
    default=False,
    help="Print the predicted peak resident memory of each stage (load, encode, "
    "denoise, decode) and the total, then one JSON line; run nothing, write "
    "nothing.",
)
@click.option(
    "--max-memory",
    type=str,
    default=None,
    help="Refuse to start when the predicted peak resident memory exceeds SIZE "
    "(bytes, or 512MiB / 8GiB / 2GB style), naming the stage and the largest "
    "decode chunk that would fit. Checked before any graph is loaded; nothing is "
    "written. The plan never changes the decode chunk by itself.",
)
@click.option(
    "--no-verify",
    is_flag=True,
    default=False,
    help="Skip the sha256 check of the graph files (faster start on large artifacts).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    default=False,
    help="Replace an existing OUT and OUT.json (never an input or an artifact file).",
)
@click.option("--quiet", "-q", is_flag=True, default=False, help="No progress bar.")
@friendly_errors
def main(
    artifact: Path,
    images: Tuple[Path, ...],
    out: str,
    steps: Optional[int],
    fps: Optional[int],
    motion_bucket_id: Optional[int],
    noise_aug_strength: Optional[float],
    min_guidance_scale: Optional[float],
    max_guidance_scale: Optional[float],
    seed: Optional[int],
    backend: Optional[str],
    lite_python: Optional[str],
    precision: str,
    noise_file: Optional[Path],
    fmt: Optional[str],
    clips: int,
    decode_overlap: int,
    plan_only: bool,
    max_memory: Optional[str],
    no_verify: bool,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Generate a video from one image (--image) with the exported ARTIFACT directory
    (made by svd-export) and write it to --out.

    Examples: svd-run artifacts/svd_xt --image photo.jpg --out clip.mp4 --seed 42;
    svd-run artifacts/svd_xt -i a.png -i b.png --out videos/ --format gif --seed 7;
    svd-run artifacts/svd_xt -i photo.jpg --out long.mp4 --clips 4 --decode-overlap 1;
    svd-run artifacts/svd_xt -i photo.jpg --out clip.mp4 --plan
    """
    options: Dict[str, Any] = dict(
        backend=backend,
        precision=precision,
        seed=seed,
        noise_file=noise_file,
        verify_hashes=not no_verify,
        progress=not quiet,
        clips=clips,
        decode_overlap=decode_overlap,
        overwrite=overwrite,
        lite_python=lite_python,
        fps=fps,
        motion_bucket_id=motion_bucket_id,
        noise_aug_strength=noise_aug_strength,
        min_guidance_scale=min_guidance_scale,
        max_guidance_scale=max_guidance_scale,
        num_inference_steps=steps,
    )
    _plan_or_run(artifact, images, out, fmt, plan_only, max_memory, options)


def _plan_or_run(
    artifact: Path,
    images: Tuple[Path, ...],
    out: str,
    fmt: Optional[str],
    plan_only: bool,
    max_memory: Optional[str],
    options: Dict[str, Any],
) -> None:
    """The plan comes first, so that --plan and --max-memory act before any graph is loaded;
    then one video, or a batch (several images, or --format: --out is a folder)."""
    if _plan_or_refuse(
        artifact,
        options["backend"],
        options["lite_python"],
        options["clips"],
        options["decode_overlap"],
        len(images),
        plan_only,
        max_memory,
    ):
        return
    if len(images) > 1 or fmt is not None:
        _run_batch(artifact, images, out, fmt or "mp4", options)
        return
    with mindspore_dumps_elsewhere():
        record = run_to_file(artifact, images[0], out, **options)
    click.echo(
        f"wrote {record['output']} ({record['num_frames']} frames, {record['width']}×"
        f"{record['height']}, {record['parameters']['fps']} fps, backend "
        f"{record['backend']} {record['precision']}, seed {record['seed']}) and "
        f"{record['sidecar']}"
    )


def _plan_or_refuse(
    artifact: Path,
    backend: Optional[str],
    lite_python: Optional[str],
    clips: int,
    decode_overlap: int,
    images: int,
    plan_only: bool,
    max_memory: Optional[str],
) -> bool:
    """--plan prints the memory plan (True: nothing else runs); --max-memory refuses a run
    whose plan exceeds it, before any graph is loaded."""
    from .plan import check_memory_limit, parse_size, plan_for_artifact

    limit = parse_size(max_memory) if max_memory is not None else None
    if not plan_only and limit is None:
        return False
    plan = plan_for_artifact(
        artifact,
        backend=backend,
        clips=clips,
        decode_overlap=decode_overlap,
        images=images,
        lite_python=lite_python,
    )
    if plan_only:
        click.echo(plan.table())
        click.echo(plan.json_line())
        return True
    if limit is not None:
        check_memory_limit(plan, limit)
    return False


def _run_batch(
    artifact: Path, images: Tuple[Path, ...], out: str, fmt: str, options: Dict[str, Any]
) -> None:
    from .batch import run_batch_cli

    with mindspore_dumps_elsewhere():
        for record in run_batch_cli(artifact, images, out, fmt, **options):
            click.echo(
                f"wrote {record['output']} ({record['num_frames']} frames, backend "
                f"{record['backend']} {record['precision']}, seed {record['seed']}) and "
                f"{record['sidecar']}"
            )


if __name__ == "__main__":  # pragma: no cover
    run_program(main)
