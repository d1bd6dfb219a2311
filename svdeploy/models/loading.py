"""Reading our checkpoint directory and loading its weights into MindSpore cells.

A checkpoint directory (``svd-convert`` / ``svd-train`` output) holds ``config.yaml`` and
``weights.safetensors`` with Stability's full names (docs/ARCHITECTURE.md, "Canonical weights").
A network cell's parameter names are the file names minus the network's prefix, so loading is a
strict name-for-name copy, one tensor in memory at a time. MindSpore is imported only when a cell
is loaded, so reading a directory stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from svdeploy.config import ModelConfig, load_model_config
from svdeploy.errors import CheckpointError, ConfigError

from .keys import NETWORK_PREFIXES, VAE_ENCODER_CHILDREN
from .weights_io import SafetensorsFile

PathLike = Union[str, os.PathLike]

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.safetensors"
PROVENANCE_FILE = "convert.json"


# Checkpoints shipped inside the package, by the name that stands for their directory.
PACKAGED_CHECKPOINTS = {"demo": "assets/demo"}


def resolve_checkpoint_dir(directory: PathLike) -> Path:
    """The directory a checkpoint argument names: a path, or the name of a checkpoint shipped
    with svdeploy (``demo``: the moving-shapes demo model). An existing path of that name wins."""
    path = Path(directory)
    packaged = PACKAGED_CHECKPOINTS.get(str(directory))
    if packaged is not None and not path.exists():
        from importlib import resources

        return Path(str(resources.files("svdeploy").joinpath(packaged)))
    return path


def read_checkpoint_dir(directory: PathLike) -> Tuple[ModelConfig, Path]:
    """(validated config, path of weights.safetensors) of an svdeploy checkpoint directory, or
    of a packaged one named as in :data:`PACKAGED_CHECKPOINTS`."""
    directory = resolve_checkpoint_dir(directory)
    if not directory.is_dir():
        raise CheckpointError(
            f"checkpoint directory {str(directory)!r} does not exist or is not a directory"
        )
    config_path = directory / CONFIG_FILE
    weights_path = directory / WEIGHTS_FILE
    if not config_path.is_file():
        raise CheckpointError(
            f"{directory} has no {CONFIG_FILE}; expected an svdeploy checkpoint "
            f"directory ({CONFIG_FILE} + {WEIGHTS_FILE}), as written by svd-convert"
        )
    if not weights_path.is_file():
        raise CheckpointError(
            f"{directory} has no {WEIGHTS_FILE}; expected an svdeploy checkpoint "
            f"directory ({CONFIG_FILE} + {WEIGHTS_FILE}), as written by svd-convert"
        )
    try:
        cfg = load_model_config(config_path)
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from None
    return cfg, weights_path


def _shorten(items: List[str], keep: int = 12) -> str:
    if len(items) <= keep:
        return ", ".join(items)
    head, tail = items[: keep - 4], items[-4:]
    hidden = len(items) - len(head) - len(tail)
    return ", ".join(head) + f", … ({hidden} more) …, " + ", ".join(tail)


def format_strict_problems(missing: List[str], unexpected: List[str], misshaped: List[str]) -> str:
    """One line: counts first (exact), then each list by name, shortened in the middle."""
    parts = [f"{len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} mis-shaped"]
    if missing:
        parts.append(f"missing: {_shorten(missing)}")
    if unexpected:
        parts.append(f"unexpected: {_shorten(unexpected)}")
    if misshaped:
        parts.append(f"mis-shaped: {_shorten(misshaped)}")
    return "; ".join(parts)


def _in_prefix(name: str, prefix: str) -> bool:
    if not name.startswith(prefix):
        return False
    if prefix == NETWORK_PREFIXES["vae_encoder"]:
        return name[len(prefix) :].startswith(VAE_ENCODER_CHILDREN)
    return True


def load_into_cell(
    cell: Any, weights_path: PathLike, prefix: str, strict: bool = True
) -> Dict[str, int]:
    """Set ``cell``'s parameters from a safetensors file: parameter ``n`` ← tensor ``prefix + n``.

    Names come from ``cell.parameters_and_names()``. With ``strict``, every parameter must be in
    the file with its exact shape and every file tensor under ``prefix`` must belong to a
    parameter; all problems are reported together in one CheckpointError before any parameter is
    changed. Tensors are read one at a time and cast to each parameter's dtype. Returns counts
    (loaded, skipped_missing, ignored_unexpected).
    """
    import mindspore as ms

    weights_path = Path(weights_path)
    params = list(cell.parameters_and_names())
    with SafetensorsFile(weights_path) as source:
        file_names = {n for n in source.infos if _in_prefix(n, prefix)}
        missing: List[str] = []
        misshaped: List[str] = []
        claimed = set()  # file names some parameter asked for, fitting or not
        plan = []
        for name, param in params:
            key = prefix + name
            info = source.infos.get(key)
            claimed.add(key)
            if info is None:
                missing.append(key)
                continue
            if tuple(info.shape) != tuple(param.shape):
                misshaped.append(
                    f"{key} (file {tuple(info.shape)}, parameter {tuple(param.shape)})"
                )
                continue
            plan.append((key, param))
        unexpected = sorted(file_names - claimed)
        if strict and (missing or unexpected or misshaped):
            raise CheckpointError(
                f"{weights_path} does not fit {type(cell).__name__} (prefix {prefix!r}): "
                + format_strict_problems(missing, unexpected, misshaped)
            )
        for key, param in plan:
            array = source.read_float32(key)
            param.set_data(ms.Tensor(array, dtype=param.dtype))
    return {"loaded": len(plan), "missing": len(missing), "unexpected": len(unexpected)}


def load_network_weights(
    cell: Any, weights_path: PathLike, network: str, strict: bool = True
) -> Dict[str, int]:
    """:func:`load_into_cell` with the prefix of ``network`` (unet, vae_decoder, vae_encoder,
    image_encoder)."""
    if network not in NETWORK_PREFIXES:
        raise CheckpointError(
            f"unknown network {network!r}; expected one of {', '.join(NETWORK_PREFIXES)}"
        )
    return load_into_cell(cell, weights_path, NETWORK_PREFIXES[network], strict=strict)


def first_non_finite(weights: PathLike) -> Optional[str]:
    """The name of the first tensor of a safetensors file holding NaN or Inf, else None (one
    tensor in memory at a time)."""
    with SafetensorsFile(weights) as tensors:
        for name in tensors.infos:
            if not np.isfinite(tensors.read_float32(name)).all():
                return name
    return None
