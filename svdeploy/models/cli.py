"""``svd-convert``: the click layer over :func:`svdeploy.models.convert.convert_checkpoint`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from svdeploy.cliutil import friendly_errors, run_program


@click.command(name="svd-convert", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Output directory: config.yaml, weights.safetensors (float32, Stability's names) "
    "and convert.json. Built under a temporary name and renamed when complete.",
)
@click.option(
    "--config",
    "config",
    default=None,
    metavar="PRESET_OR_YAML",
    help="Model config: a preset (svd, svd_xt, tiny, mid) or a YAML file. Required for "
    "single-file checkpoints (Stability .safetensors / torch .ckpt, mindone .ckpt), "
    "whose weights do not say the frame count; optional for diffusers and svdeploy "
    "folders (then it must describe the same networks).",
)
@click.option(
    "--from",
    "source_format",
    default=None,
    metavar="FORMAT",
    help="Source layout, one of sgm, mindone, diffusers, svdeploy. Default: detected from "
    "the content (not the file extension).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace --out if it exists and is not empty (never a folder holding SRC or the "
    "current directory); the old one is removed only after the new one is complete.",
)
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
@friendly_errors
def main(
    src: Path,
    out_dir: Path,
    config: Optional[str],
    source_format: Optional[str],
    overwrite: bool,
    quiet: bool,
) -> None:
    """Convert an SVD / SVD-XT checkpoint SRC into an svdeploy checkpoint directory.

    SRC is a Stability single file (svd.safetensors, svd_xt.safetensors, or a torch .ckpt), a
    mindone MindSpore .ckpt, a diffusers folder (unet/, vae/, image_encoder/) or an svdeploy
    directory. Only the U-Net, the temporal VAE decoder, the conditioning VAE encoder and the
    OpenCLIP image encoder are kept; every one of their tensors must be present with the right
    shape, and other tensors (text tower, EMA copies, ...) are ignored and counted.

    Example: svd-convert svd_xt.safetensors --config svd_xt --out ckpt/svd_xt
    """
    from .convert import convert_checkpoint  # keeps --help fast

    log = None if quiet else (lambda message: click.echo(message, err=True))
    report = convert_checkpoint(
        src,
        out_dir,
        config=config,
        source_format=source_format,  # type: ignore[arg-type]
        overwrite=overwrite,
        progress=not quiet,
        log=log,
    )
    if not quiet:
        click.echo(report.summary())


if __name__ == "__main__":
    run_program(main)
