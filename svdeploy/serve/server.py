"""Starting and stopping the Ray Serve application: a local Ray (the embedded default) or a
running cluster (``--address``). The CLI is a thin layer over ``start_server``."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from svdeploy.errors import ServeError

from .jobs import JobStore, lock_jobs_dir
from .settings import ServeSettings

Log = Callable[[str], None]


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something else listens on before Ray starts (Serve would only log it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServeError(
                f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port or --host"
            ) from None


def check_local_capacity(settings: ServeSettings, cpus: int) -> None:
    """A local Ray has this machine's CPUs: replicas that cannot all be placed would wait
    forever."""
    needed = settings.replicas * settings.replica_cpus
    if needed > cpus:
        raise ServeError(
            f"--replicas {settings.replicas} × --replica-cpus {settings.replica_cpus} "
            f"= {needed:g} CPUs, but this machine has {cpus}; lower them (a fraction "
            "such as --replica-cpus 0.5 is allowed) or join a cluster with --address"
        )


@dataclass
class Server:
    settings: ServeSettings
    local: bool  # True: this process started Ray and stops it

    @property
    def url(self) -> str:
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"http://{host}:{self.settings.port}"

    def stop(self) -> None:
        """Remove the application; a local Ray is shut down too. Queued and running jobs stay
        on disk and run at the next start."""
        import ray
        from ray import serve

        from .app import APP_NAME

        try:
            if self.local:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)  # other applications of the cluster keep running
        finally:
            ray.shutdown()


def start_server(
    settings: ServeSettings, log: Log = lambda _m: None, verbose: bool = False
) -> Server:
    """Start Ray (or join ``settings.address``), deploy the application and return once every
    replica has loaded the artifact."""
    JobStore(settings.jobs_dir)  # creates it, or says why it cannot
    lock_jobs_dir(Path(settings.jobs_dir)).close()  # early, clear error; the Api holds it later
    check_port_free(settings.host, settings.port)
    local = settings.address is None
    if local:
        check_local_capacity(settings, os.cpu_count() or 1)
    import ray
    from ray import serve

    from .app import APP_NAME, build_app

    level = logging.INFO if verbose else logging.WARNING
    log(
        "starting a local Ray instance"
        if local
        else f"joining the Ray cluster at {settings.address}"
    )
    if local:
        ray.init(include_dashboard=False, logging_level=level, log_to_driver=verbose)
    else:
        ray.init(address=settings.address, logging_level=level, log_to_driver=verbose)
    server = Server(settings, local)
    try:
        serve.start(
            http_options={"host": settings.host, "port": settings.port},
            logging_config={"log_level": "INFO" if verbose else "WARNING"},
        )
        log(f"loading the artifact on {settings.replicas} replica(s) (backend {settings.backend})")
        serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    except BaseException as exc:
        try:
            server.stop()
        except Exception:
            pass
        if isinstance(exc, Exception) and not isinstance(exc, ServeError):
            raise ServeError(f"the application did not start: {_first_line(exc)}") from None
        raise
    return server


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line]
    return (errors[-1] if errors else lines[0] if lines else type(exc).__name__)[:500]


__all__ = ["Server", "start_server", "check_port_free", "check_local_capacity"]
