"""``svd-serve``: image-to-video as an HTTP service on Ray Serve."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Optional

import click

from svdeploy.cliutil import friendly_errors, run_program
from svdeploy.errors import InputError
from svdeploy.runtime import BACKENDS

from .settings import PRECISIONS, ServeSettings, parse_duration, parse_size, resolve_settings


def _converted(parse):
    def callback(ctx: click.Context, param: click.Parameter, value: Optional[str]):
        try:
            return None if value is None else parse(value)
        except InputError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


@click.command(
    name="svd-serve",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address the HTTP server listens on (0.0.0.0: every interface).",
)
@click.option("--port", type=int, default=8000, show_default=True, help="HTTP port.")
@click.option(
    "--replicas",
    type=int,
    default=1,
    show_default=True,
    help="Generator replicas; each loads the artifact once and makes one video at a "
    "time. Jobs beyond them wait in the queue.",
)
@click.option(
    "--replica-cpus",
    type=float,
    default=1.0,
    show_default=True,
    help="CPUs Ray reserves per replica (placement; fractions allowed).",
)
@click.option(
    "--replica-gpus",
    type=float,
    default=0.0,
    show_default=True,
    help="GPUs Ray reserves per replica (e.g. 1 with onnxruntime-gpu on GPU nodes).",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default=None,
    help="Graph backend of the replicas. Default: the best the artifact and this "
    "machine allow, as svd-run chooses.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=None,
    help="Compute precision of the replicas, as svd-run --precision (fp32, bf16 on "
    "openvino, auto; mindspore/lite run the exported dtype). Checked before Ray "
    "starts. Default: auto.",
)
@click.option(
    "--lite-python",
    "lite_python",
    type=str,
    default=None,
    envvar="SVDEPLOY_LITE_PYTHON",
    show_envvar=True,
    help="Python interpreter that has mindspore_lite, as svd-run --lite-python: the "
    "lite backend's replicas run their graphs in a worker of that interpreter "
    "(the path must exist on every node that holds a replica).",
)
@click.option(
    "--jobs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("svd-serve-jobs"),
    show_default=True,
    help="Job records, inputs and results (on the node of the API replica: the head "
    "node). A restart on the same folder serves the finished jobs and runs the "
    "queued and interrupted ones again.",
)
@click.option(
    "--address",
    default=None,
    help="Join this running Ray cluster (e.g. ray://head:10001 or auto) and place the "
    "replicas there. Default: start a local Ray instance.",
)
@click.option(
    "--max-queue",
    type=int,
    default=16,
    show_default=True,
    help="Jobs queued or running at once; more get 429 with Retry-After.",
)
@click.option(
    "--max-upload",
    default="20MB",
    show_default=True,
    callback=_converted(parse_size),
    help="Largest request body (the image and the fields); more gets 413.",
)
@click.option(
    "--keep",
    "keep_seconds",
    default="24h",
    show_default=True,
    callback=_converted(parse_duration),
    help="How long finished jobs (records and videos) are kept: 90s, 30m, 24h, 7d.",
)
@click.option(
    "--no-verify",
    is_flag=True,
    default=False,
    help="Replicas skip the sha256 check of the graph files (faster start).",
)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    default=False,
    help="Ray's and Serve's logs (every request) on this terminal.",
)
@friendly_errors
def main(
    artifact: Path,
    host: str,
    port: int,
    replicas: int,
    replica_cpus: float,
    replica_gpus: float,
    backend: Optional[str],
    precision: Optional[str],
    lite_python: Optional[str],
    jobs_dir: Path,
    address: Optional[str],
    max_queue: int,
    max_upload: int,
    keep_seconds: float,
    no_verify: bool,
    verbose: bool,
) -> None:
    """Serve the exported ARTIFACT (made by svd-export) over HTTP: POST an image to /v1/videos,
    poll /v1/videos/{id}, fetch /v1/videos/{id}/content.

    \b
    Example: svd-serve artifacts/svd_xt --port 8000 --replicas 2
             curl -F image=@photo.png -F seed=42 http://127.0.0.1:8000/v1/videos

    Runs until interrupted (Ctrl-C or SIGTERM). docs/SERVING.md has the API, the cluster set-up
    and what a replica costs.
    """
    settings = resolve_settings(
        artifact,
        jobs_dir,
        backend=backend,
        precision=precision,
        lite_python=lite_python,
        host=host,
        port=port,
        replicas=replicas,
        replica_cpus=replica_cpus,
        replica_gpus=replica_gpus,
        address=address,
        max_queue=max_queue,
        max_upload=max_upload,
        keep_seconds=keep_seconds,
        verify_hashes=not no_verify,
    )
    _serve_until_stopped(settings, verbose)


def _serve_until_stopped(settings: ServeSettings, verbose: bool) -> None:
    """Start the server, then wait for Ctrl-C or SIGTERM: our handlers replace Ray's (installed
    by its start), so that the server stops cleanly and the jobs stay on disk."""
    from .server import start_server

    log = lambda message: click.echo(f"svd-serve: {message}", err=True)  # noqa: E731
    server = start_server(settings, log, verbose=verbose)
    stop = threading.Event()
    # after Ray's start, which installs its own handlers: ours stop the server cleanly
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        click.echo(
            f"svd-serve: serving {settings.artifact} at {server.url} ({settings.replicas} "
            f"replica(s), backend {settings.backend}); jobs in {settings.jobs_dir}",
            err=True,
        )
        click.echo(f"ready {server.url}", err=True)
        while not stop.wait(1.0):
            pass
        log("stopping (queued and running jobs stay in the jobs directory)")
    finally:
        server.stop()


if __name__ == "__main__":  # pragma: no cover
    run_program(main)
