"""``svd-export``: a checkpoint directory → an artifact of static-shape graphs + manifest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

import click

from svdeploy.cliutil import (
    friendly_errors,
    mindspore_dumps_elsewhere,
    run_program,
    setup_mindspore,
)
from svdeploy.contract import NETWORK_NAMES

from .specs import CONVS, DTYPES, TARGETS

if TYPE_CHECKING:  # pragma: no cover
    from .api import ExportResult


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--checkpoint",
    "checkpoint",
    required=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Checkpoint directory written by svd-convert or svd-train (config.yaml + "
    "weights.safetensors), or `demo`: the moving-shapes model shipped with svdeploy.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=str),
    help="Artifact directory to create (manifest.json + one file per graph). Written "
    "to a temporary directory first and renamed into place when complete.",
)
@click.option(
    "--frames",
    type=click.IntRange(min=1),
    default=None,
    help="Frames per video (static). Default: the config's num_frames (14 svd, 25 svd_xt).",
)
@click.option(
    "--height",
    type=click.IntRange(min=1),
    default=None,
    help="Video height in pixels (static). Default: the config's (576).",
)
@click.option(
    "--width",
    type=click.IntRange(min=1),
    default=None,
    help="Video width in pixels (static). Default: the config's (1024).",
)
@click.option(
    "--cfg/--no-cfg",
    "guidance",
    default=True,
    show_default=True,
    help="Export the U-Net for classifier-free guidance (batch [uncond, cond]) or for "
    "a single conditional batch (guidance scale 1, half the work).",
)
@click.option(
    "--decode-chunk-size",
    type=click.IntRange(min=1),
    default=None,
    help="Frames decoded together by the temporal VAE decoder (mixes frames only inside "
    "a chunk, so it changes the result slightly). When it does not divide the frame "
    "count a second graph for the last, shorter chunk is exported. Default: the "
    "config's sampling.decode_chunk_size, else all frames.",
)
@click.option(
    "--format",
    "fmt",
    type=str,
    default="mindir",
    show_default=True,
    help="Graph format(s), a comma-separated list of mindir (MindSpore), onnx (ONNX "
    "Runtime) and lite (plain ONNX converted by MindSpore Lite's converter, run "
    "by --backend lite; needs mindspore_lite here or --lite-python); both = "
    "mindir,onnx. Example: --format onnx,lite",
)
@click.option(
    "--lite-python",
    "lite_python",
    type=str,
    default=None,
    envvar="SVDEPLOY_LITE_PYTHON",
    show_envvar=True,
    help="Python interpreter that has mindspore_lite (e.g. a Python 3.7 venv with "
    "mindspore-lite 2.0.0), used to convert and validate lite graphs when "
    "mindspore_lite does not import in svdeploy's own Python.",
)
@click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    default="fp32",
    show_default=True,
    help="Precision of matmul / convolution work inside the graphs (norms and softmax "
    "stay fp32; inputs and outputs are always float32). bf16 is MindIR only.",
)
@click.option(
    "--target",
    type=click.Choice(TARGETS),
    default="cpu",
    show_default=True,
    help="cpu: op variants fastest for MindSpore / ONNX Runtime on CPU. ascend: "
    "MindSpore's own ops, plus MindSpore Lite converter configs and commands in "
    "ascend/ (the conversion itself needs MindSpore Lite on an Ascend host).",
)
@click.option(
    "--conv",
    type=click.Choice(CONVS),
    default="auto",
    show_default=True,
    help="Convolution kernel of MindIR graphs for --target cpu: native (MindSpore's "
    "Conv2D) or im2col (shifted windows + one GEMM). Which is faster depends on "
    "the CPU (10-50x either way); auto times one 3x3 convolution with each on this "
    "machine (about a second) and takes the faster, recorded in the manifest. Pass "
    "it explicitly when the graphs will run on another kind of CPU. ONNX and "
    "Ascend graphs always use native.",
)
@click.option(
    "--graph",
    "graphs",
    multiple=True,
    type=click.Choice(list(NETWORK_NAMES)),
    help="Export only these networks (repeatable). The artifact is then marked partial "
    "and svd-run refuses it; useful for timing one graph at full size.",
)
@click.option(
    "--validate/--no-validate",
    default=True,
    show_default=True,
    help="Load every written graph back and compare it with the float32 in-memory network "
    "on random inputs; fail above tolerance (1e-4 relative L2 for fp32).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the random validation inputs."
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing, non-empty --out directory (never one that holds "
    "--checkpoint or the current directory). The old one is removed only after "
    "the new artifact is complete.",
)
@click.option("--quiet", is_flag=True, help="No progress bar or per-graph lines.")
@friendly_errors
def main(
    checkpoint: str,
    out: str,
    frames: Optional[int],
    height: Optional[int],
    width: Optional[int],
    guidance: bool,
    decode_chunk_size: Optional[int],
    fmt: str,
    lite_python: Optional[str],
    dtype: str,
    target: str,
    conv: str,
    graphs: Tuple[str, ...],
    validate: bool,
    seed: int,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Trace image encoder, VAE encoder, U-Net and temporal VAE decoder into static-shape graphs,
    check each against the network, and write an artifact for svd-run."""
    from .specs import parse_formats

    formats = parse_formats(fmt)  # a typo fails before MindSpore starts
    setup_mindspore("graph")
    from .api import export_artifact

    log = (lambda _m: None) if quiet else (lambda m: click.echo(m, err=True))
    with mindspore_dumps_elsewhere():
        result = export_artifact(
            checkpoint,
            out,
            frames=frames,
            height=height,
            width=width,
            guidance=guidance,
            decode_chunk_size=decode_chunk_size,
            formats=formats,
            dtype=dtype,
            target=target,
            graphs=graphs or None,
            validate=validate,
            overwrite=overwrite,
            seed=seed,
            conv=conv,
            progress=not quiet,
            log=log,
            lite_python=lite_python,
        )
    _report(result)


def _report(result: "ExportResult") -> None:
    """What was exported, the per-graph table, and the command left to run on an Ascend host."""
    m = result.manifest
    click.echo(
        f"exported {m.variant}: {m.num_frames} frames {m.height}x{m.width}, "
        f"guidance batch {m.guidance_batch}, decode chunk {m.decode_chunk_size}, "
        f"{m.dtype}, target {m.target}, in {result.seconds:.1f} s"
    )
    click.echo(result.table())
    if result.ascend_commands:
        click.echo(
            "MindSpore Lite conversion for Ascend (run on the Ascend host): "
            f"bash {result.directory}/ascend/convert.sh"
        )
    click.echo(f"artifact: {result.directory}")


if __name__ == "__main__":  # pragma: no cover
    run_program(main)
