"""Seeded random weights for any config, written as a Stability-layout single file.

Used by the demo and tests where no real checkpoint exists. Values follow torch's default
initialisation scale (uniform ±1/√fan_in for matrices and convolutions), with norm weights near
1, small random biases and mix factors from N(0, 1), so every parameter matters and activations
keep a sensible range. Pure NumPy: no MindSpore needed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Tuple, Union

import numpy as np

from svdeploy.config import ModelConfig

from .keys import sgm_parameter_shapes
from .weights_io import SafetensorsWriter

Shape = Tuple[int, ...]


def random_tensor(name: str, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "mix_factor":
        values = rng.standard_normal(shape)
    elif leaf in ("class_embedding", "positional_embedding", "proj"):
        width = shape[-1] if leaf != "proj" else shape[0]
        values = rng.standard_normal(shape) * width**-0.5
    elif len(shape) == 1:
        # norm weights around 1, everything else 1-D (biases) small
        is_norm_weight = leaf == "weight"
        values = (1.0 if is_norm_weight else 0.0) + 0.1 * rng.standard_normal(shape)
    else:
        fan_in = int(np.prod(shape[1:]))
        bound = 1.0 / math.sqrt(max(fan_in, 1))
        values = rng.uniform(-bound, bound, shape)
    return values.astype(np.float32)


def write_random_sgm_file(cfg: ModelConfig, path: Union[str, os.PathLike], seed: int = 0) -> Path:
    """All four networks' tensors under Stability's names, float32, in one safetensors file."""
    path = Path(path)
    shapes = sgm_parameter_shapes(cfg)
    names = sorted(shapes)
    rng = np.random.default_rng(seed)
    with SafetensorsWriter(
        path,
        [(n, shapes[n], "F32") for n in names],
        metadata={"format": "pt", "note": f"svdeploy random weights, seed {seed}"},
    ) as writer:
        for name in names:
            writer.write(name, random_tensor(name, shapes[name], rng))
    return path
