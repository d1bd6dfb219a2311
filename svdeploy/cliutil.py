"""Small helpers shared by the click commands."""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import click

from .errors import SvdeployError

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Print svdeploy errors (and missing files) as one line and exit with status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SvdeployError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


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
