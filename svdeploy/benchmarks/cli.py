"""``svd-bench``: measure svdeploy against diffusers (and itself) on this machine."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

import click

from svdeploy.cliutil import friendly_errors, run_program
from svdeploy.export.specs import CONVS, DTYPES

from .harness import GRAPHS, SUITES
from .peers import PEERS


def _csv(choices: Optional[Tuple[str, ...]] = None, integers: bool = False):
    """A click callback turning "a,b" into a tuple, checked against ``choices``."""

    def parse(ctx: click.Context, param: click.Parameter, value: Optional[str]):
        if value is None:
            return None
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        if not items:
            raise click.BadParameter(f"{value!r}: expected a comma-separated list")
        if integers:
            try:
                numbers = tuple(int(v) for v in items)
            except ValueError:
                raise click.BadParameter(
                    f"{value!r}: expected comma-separated integers, e.g. 8,16,32"
                ) from None
            if any(n < 1 for n in numbers):
                raise click.BadParameter(f"{value!r}: expected positive integers")
            return numbers
        if choices is not None:
            if "both" in items and set(choices) == {"mindir", "onnx"}:
                items = ("mindir", "onnx")
            bad = [v for v in items if v not in choices]
            if bad:
                raise click.BadParameter(
                    f"{', '.join(map(repr, bad))}: expected some of {', '.join(choices)}"
                )
        return items

    return parse


def _command_line(ctx: click.Context) -> str:
    """The command as given (options the user set, in canonical spelling), for the report."""
    from click.core import ParameterSource

    parts = ["svd-bench"] + list(ctx.params["suites"])
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        if ctx.get_parameter_source(param.name) not in (
            ParameterSource.COMMANDLINE,
            ParameterSource.ENVIRONMENT,
        ):
            continue
        value = ctx.params[param.name]
        if param.is_flag and not param.secondary_opts:
            if value:
                parts.append(param.opts[0])
        elif param.is_bool_flag or param.secondary_opts:
            parts.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            parts += [param.opts[0], shlex.quote(text)]
    return " ".join(parts)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("suites", nargs=-1, required=True, type=click.Choice(SUITES + ("all", "quality")))
@click.option(
    "--config",
    "config",
    default="tiny",
    show_default=True,
    help="Model preset (tiny, mid, svd, svd_xt) or a YAML config path. Weights are "
    "random (timing and parity only).",
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("svd-bench-out"),
    show_default=True,
    help="Directory for report.json, report.md and one <suite>.png chart per suite.",
)
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for the weights, exports and outputs the suites share; reused by "
    "later runs with the same settings. Default: OUT/work.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Timed runs per case (graph calls, training steps) after warm-up; median and "
    "p10/p90 are reported.",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Untimed runs before timing (the first also compiles graphs).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default=True,
    help="Threads for every library in every process (torch, MindSpore, ONNX Runtime, "
    "BLAS/OpenMP), and for the GEMM peak.",
)
@click.option(
    "--peers",
    callback=_csv(PEERS),
    default=None,
    help="Comma-separated peers (default all): " + ", ".join(PEERS) + ". diffusers* and "
    "plain-onnx need torch + diffusers; openvino* need openvino (openvino-bf16 a CPU "
    "with native bf16); lite needs mindspore_lite here or --lite-python; e2e and "
    "memory use diffusers, diffusers-bf16, onnxruntime, openvino, openvino-bf16 "
    "and ms-graphcell (as VideoPipeline backends).",
)
@click.option(
    "--formats",
    callback=_csv(("mindir", "onnx", "lite")),
    default=None,
    help="Graph formats svdeploy exports for the measurements: some of mindir, onnx, "
    "lite (default mindir,onnx). lite (the lite peer) needs mindspore_lite here "
    "or --lite-python.",
)
@click.option(
    "--lite-python",
    "lite_python",
    type=str,
    default=None,
    envvar="SVDEPLOY_LITE_PYTHON",
    show_envvar=True,
    help="Python interpreter with mindspore_lite, for the lite peer's conversion and "
    "runs (handed to the measuring processes as SVDEPLOY_LITE_PYTHON).",
)
@click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    default="fp32",
    show_default=True,
    help="Compute precision of svdeploy's graphs (svd-export --dtype); bf16 is MindIR "
    "only. Figures are compared with diffusers at the same precision (fp32 with "
    "diffusers fp32, fp16/bf16 with diffusers bf16 autocast).",
)
@click.option(
    "--conv",
    type=click.Choice(CONVS),
    default="auto",
    show_default=True,
    help="Convolution kernel of svdeploy's MindIR graphs and of the ms-pynative peer "
    "(svd-export --conv). auto: the faster on this machine by svd-export's probe "
    "(resolved once, recorded in the report's notes); run once with each to see "
    "the whole difference.",
)
@click.option(
    "--graphs",
    callback=_csv(GRAPHS),
    default=None,
    help="Comma-separated graphs for the export and graphs suites (default all four).",
)
@click.option(
    "--frames",
    type=click.IntRange(min=1),
    default=None,
    help="Frames per video (default: the config's). Use fewer for full-size presets on "
    "a small machine; the report says so.",
)
@click.option(
    "--height",
    type=click.IntRange(min=1),
    default=None,
    help="Video height (default: the config's).",
)
@click.option(
    "--width", type=click.IntRange(min=1), default=None, help="Video width (default: the config's)."
)
@click.option(
    "--decode-chunk-size",
    type=click.IntRange(min=1),
    default=None,
    help="Frames per VAE decoder call (default: the config's, else all frames).",
)
@click.option(
    "--cfg/--no-cfg",
    "guidance",
    default=True,
    show_default=True,
    help="Classifier-free guidance batch (2) or a single conditional batch (1).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Denoising steps per video in e2e (default: the config's num_inference_steps).",
)
@click.option(
    "--e2e-repeats",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Videos timed per e2e peer (each has --steps steps, every step is timed too).",
)
@click.option(
    "--memory-frames",
    callback=_csv(integers=True),
    default=None,
    help="Frame counts decoded by the memory suite (default F, 2F, 4F).",
)
@click.option(
    "--memory-chunks",
    callback=_csv(integers=True),
    default=None,
    help="Decode chunk sizes of the memory suite (default F/4, F/2, F).",
)
@click.option(
    "--temporal-only/--all-parameters",
    default=True,
    show_default=True,
    help="train suite: train the temporal layers only (SVD's recipe) or every U-Net parameter.",
)
@click.option(
    "--serve-clients",
    callback=_csv(integers=True),
    default=None,
    help="serve suite: concurrent clients, one load run per value (default 1,4).",
)
@click.option(
    "--serve-seconds",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="serve suite: seconds each load run submits jobs.",
)
@click.option(
    "--serve-replicas",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="serve suite: Generator replicas of the server.",
)
@click.option(
    "--gemm-size",
    type=click.IntRange(min=64),
    default=4096,
    show_default=True,
    help="n of the n×n×n float32 matmul that measures the machine's GEMM peak.",
)
@click.option(
    "--case-budget",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds of timed runs per case; a slower case stops early (at least 3 runs) "
    "and its sample count shows it.",
)
@click.option(
    "--case-timeout",
    type=click.FloatRange(min=10),
    default=3600.0,
    show_default=True,
    help="Seconds after which a case's process is killed and reported as failed.",
)
@click.option(
    "--schedule",
    type=click.Choice(["interleaved", "sequential"]),
    default="interleaved",
    show_default=True,
    help="graphs / e2e: interleaved loads every peer of a graph (one after the other), "
    "then the peers take turns call by call, so all see the same machine load and "
    "their ratios hold on a busy machine; sequential measures one peer at a time "
    "(less memory: for full-size models).",
)
@click.option(
    "--freeze-idle/--no-freeze-idle",
    default=True,
    show_default=True,
    help="interleaved: stop (SIGSTOP) every other peer's process while one peer is "
    "timed and continue it after, so no idle peer (thread pools that spin-wait "
    "for work) can take cores from it; the report gives the CPU the idle peers "
    "used during each peer's calls either way.",
)
@click.option(
    "--standalone-repeats",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="graphs / e2e: after the interleaved runs, time each peer again alone (no "
    "other peer process exists) this many times, reported as the standalone "
    "median beside the interleaved one; 0 skips it.",
)
@click.option(
    "--memory-limit",
    "memory_limit_gb",
    type=click.FloatRange(min=0.1),
    default=None,
    help="GiB the worker processes may hold together; above it svd-bench kills the "
    "largest and reports it (before the kernel's OOM killer picks any process). "
    "Default: 75% of this machine's memory.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the random weights and inputs."
)
@click.option(
    "--diffusers/--no-diffusers",
    "use_diffusers",
    default=True,
    show_default=True,
    help="Build the weights with diffusers (and run the diffusers peers) when torch + "
    "diffusers import; --no-diffusers uses svdeploy's random weights only.",
)
@click.option(
    "--export-validate/--no-export-validate",
    default=True,
    show_default=True,
    help="export suite: let svd-export validate each graph (as users run it).",
)
@click.option(
    "--checkpoint",
    default="demo",
    show_default=True,
    help="quality: the checkpoint to export and evaluate (a model of the moving-shapes "
    "world; `demo` is the shipped one). Ignored with --artifact.",
)
@click.option(
    "--artifact",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="quality: evaluate this exported artifact instead of exporting "
    "--checkpoint (into --work) first.",
)
@click.option(
    "--images",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="quality: fresh world images, each generated at the slow and the fast bucket.",
)
@click.option(
    "--backends",
    callback=_csv(("onnxruntime", "mindspore", "openvino", "lite")),
    default="onnxruntime,mindspore",
    show_default=True,
    help="quality: runtime backends to evaluate, comma-separated.",
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
@friendly_errors
def main(
    suites: Tuple[str, ...],
    config: str,
    out: Path,
    work: Optional[Path],
    steps: Optional[int],
    lite_python: Optional[str],
    checkpoint: str,
    artifact: Optional[Path],
    images: int,
    backends: Tuple[str, ...],
    quiet: bool,
    **options: Any,
) -> None:
    """Run benchmark SUITES (export, graphs, e2e, memory, train, serve, or all) on one model
    config and write report.json, report.md and a chart per suite into --out.

    \b
    export  seconds, peak RSS and file size of svd-export per graph and format
    graphs  latency of each graph per peer (median, p10/p90), speed-up vs diffusers,
            GFLOP/s and % of this machine's GEMM peak, parity vs diffusers
    e2e     seconds per video and per step, image to frames (VideoPipeline; diffusers)
    memory  peak RSS of VAE decoding against frame count and decode chunk size
    train   seconds per training step, compile time separately
    serve   svd-serve under N concurrent clients: videos/s, latency p50/p90/p99, nothing
            lost, replica RSS (needs the serve extra)
    quality (not in `all`) a model of the moving-shapes world (--checkpoint, default the
            shipped demo model) on --images fresh images at the slow and fast motion buckets:
            direction, speed, frame-0 PSNR and object area per backend; quality.json/.md

    Every case runs in its own process. Peers share identical weights (diffusers random init
    converted with svd-convert) and identical inputs.
    """
    from svdeploy.config import load_model_config

    from .api import run_benchmarks
    from .harness import resolve_settings

    if lite_python:
        # every case runs in its own process; they inherit the Lite interpreter from here
        os.environ["SVDEPLOY_LITE_PYTHON"] = lite_python
    log = (lambda _m: None) if quiet else (lambda m: click.echo(m, err=True))
    if "quality" in suites:
        _quality(out, work, checkpoint, artifact, images, backends, steps, log)
        suites = tuple(s for s in suites if s != "quality")
        if not suites:
            return
    cfg = load_model_config(config)
    chosen = SUITES if "all" in suites else tuple(dict.fromkeys(suites))
    # every other option is a benchmark setting (harness.BenchSettings); two are renamed there
    options["case_budget_s"] = options.pop("case_budget")
    options["case_timeout_s"] = options.pop("case_timeout")
    settings = resolve_settings(cfg, config, out, work=work, steps=steps, **options)
    command = _command_line(click.get_current_context())
    report = run_benchmarks(settings, chosen, command, log)
    click.echo(
        f"svd-bench: {', '.join(chosen)} in {report['seconds']:.0f} s; report: "
        f"{settings.out / 'report.md'}"
    )


def _quality(
    out: Path,
    work: Optional[Path],
    checkpoint: str,
    artifact: Optional[Path],
    images: int,
    backends: Tuple[str, ...],
    steps: Optional[int],
    log: Callable[[str], None],
) -> None:
    from svdeploy.runtime.backends import BACKEND_FORMATS

    from .quality import markdown, run_quality

    if artifact is None:
        from svdeploy.export import export_artifact

        artifact = (work or out / "work") / "quality-artifact"
        formats = sorted({BACKEND_FORMATS[b] for b in backends})
        log(f"quality: exporting {checkpoint} ({', '.join(formats)}) to {artifact}")
        export_artifact(checkpoint, artifact, formats=formats, overwrite=True, progress=False)
    summaries = run_quality(artifact, backends, images, out, steps=steps, log=log)
    click.echo(markdown(summaries), nl=False)
    click.echo(
        f"svd-bench: quality of {artifact} on {', '.join(backends)}; report: {out / 'quality.md'}"
    )


if __name__ == "__main__":  # pragma: no cover
    run_program(main)
