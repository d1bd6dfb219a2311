"""The SVD networks in MindSpore (Stability's parameter names), presets and weight loading.

Attributes are imported lazily: ``svd-convert`` reads and writes weights without MindSpore, so
``import svdeploy.models.convert`` must not pay for importing it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "NETWORK_NAMES": "build",
    "build_network": "build",
    "load_network": "build",
    "parameter_count": "build",
    "parameter_shapes": "build",
    "ImageEncoder": "clip",
    "VideoUNet": "unet",
    "VAEEncoder": "vae",
    "VideoDecoder": "vae",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
