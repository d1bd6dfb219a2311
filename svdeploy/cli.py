"""Console entry points. Each dispatches lazily to its subpackage's click command, so that
``svd-run`` never imports the model, export or training code."""

from __future__ import annotations

import importlib

from .cliutil import run_program


def _dispatch(module: str) -> None:
    run_program(importlib.import_module(module).main)


def convert_main() -> None:
    _dispatch("svdeploy.models.cli")


def export_main() -> None:
    _dispatch("svdeploy.export.cli")


def run_main() -> None:
    _dispatch("svdeploy.runtime.cli")


def train_main() -> None:
    _dispatch("svdeploy.train.cli")


def data_main() -> None:
    _dispatch("svdeploy.train.data_cli")


def bench_main() -> None:
    _dispatch("svdeploy.benchmarks.cli")


def serve_main() -> None:
    _dispatch("svdeploy.serve.cli")
