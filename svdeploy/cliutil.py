"""Small helpers shared by the click commands."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import tempfile
import threading
from typing import Any, Callable, Iterator, TypeVar

import click

from .errors import SvdeployError
from .fsutil import InterruptLatch, describe_os_error, raise_if_interrupted, remove_quietly

F = TypeVar("F", bound=Callable[..., Any])
# MindSpore writes the dumps of a failed compilation (rank_0/om/analyze_fail.ir) under the folder
# this variable names, the current directory by default (MS_DEV_SAVE_GRAPHS_PATH does not move
# them); it is read at each failure, so setting it after import works
MS_DUMP_ENV = "MS_OM_PATH"


@contextlib.contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (kill, a scheduler stopping a job) and SIGINT into KeyboardInterrupt, so
    the writers' cleanup (remove the temporaries, keep the earlier output) runs for both.
    SIGINT is set again because a library may have replaced Python's handler. The handler is
    a latch: where a library swallowed the KeyboardInterrupt, the next publishing step (and
    the end of the command) raises it again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    latch = InterruptLatch()
    for sig in previous:
        signal.signal(sig, latch)
    try:
        yield
        raise_if_interrupted()  # a library caught the KeyboardInterrupt: the run still ends so
    except Exception:
        # a library turned the KeyboardInterrupt into its own error (MindSpore: RuntimeError)
        if latch.signum is not None:
            raise KeyboardInterrupt(f"signal {latch.signum}") from None
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


INTERRUPTED_STATUS = 130  # the shell's status for a command ended by SIGINT


def friendly_errors(func: F) -> F:
    """Print svdeploy errors (and OS errors) as one line and exit with status 2; SIGINT and
    SIGTERM end with status 130 after the writers cleaned up."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with termination_as_interrupt():
                return func(*args, **kwargs)
        except SvdeployError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:  # a writer that did not name its path itself
            where = f" {exc.filename!r}" if exc.filename else ""
            click.echo(f"error: file system error{where}: {describe_os_error(exc)}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(INTERRUPTED_STATUS)

    return wrapper  # type: ignore[return-value]


def run_program(command: Callable[[], Any]) -> None:
    """Run a CLI's click command as this process's program (console scripts, ``python -m``).

    An interrupted command (status 130, its writers already cleaned up) ends the process at
    once, without the interpreter's shutdown: Python resets SIGINT to its default action while
    it shuts down, and a SIGINT that reaches the process then kills it (status −2) after it
    printed "interrupted". Seen once in a full test run, after a SIGTERM during svd-export;
    the sender of that SIGINT was not found (MindSpore registers its own SIGINT handler)."""
    try:
        command()
    except SystemExit as exc:
        if exc.code != INTERRUPTED_STATUS:
            raise
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED_STATUS)


def setup_mindspore(mode: str = "graph") -> None:
    """Select the CPU and the execution mode. Only CLIs call this; library code takes the
    context as it finds it."""
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        ms.set_device("CPU")
    except RuntimeError:
        # the device can only be chosen before MindSpore's runtime starts; a CLI invoked inside
        # a process that already ran MindSpore (tests, notebooks) keeps that process's device
        pass


@contextlib.contextmanager
def mindspore_dumps_elsewhere() -> Iterator[None]:
    """Send MindSpore's compile dumps (a failed compilation writes rank_0/om/analyze_fail.ir
    into the current directory) to a temporary folder removed afterwards, unless the user
    chose a folder through MS_OM_PATH."""
    if os.environ.get(MS_DUMP_ENV):
        yield
        return
    try:
        folder = tempfile.mkdtemp(prefix="svdeploy-ms-dumps-")
    except OSError:  # no writable temporary folder: dumps only matter if a compile fails
        yield
        return
    os.environ[MS_DUMP_ENV] = folder
    try:
        yield
    finally:
        os.environ.pop(MS_DUMP_ENV, None)
        remove_quietly(folder)
