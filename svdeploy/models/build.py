"""Build the four SVD networks from a config, and load them from a checkpoint directory."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple, Union

from mindspore import nn

from svdeploy.config import ModelConfig
from svdeploy.contract import NETWORK_NAMES, NetworkName
from svdeploy.kernels.config import KernelConfig

from .clip import ImageEncoder
from .unet import VideoUNet
from .vae import VAEEncoder, VideoDecoder


def build_network(
    name: NetworkName, cfg: ModelConfig, kernels: KernelConfig = KernelConfig()
) -> nn.Cell:
    """A network with random weights (torch-like default init)."""
    if name == "unet":
        return VideoUNet(cfg.unet, kernels)
    if name == "vae_encoder":
        return VAEEncoder(cfg.vae, kernels)
    if name == "vae_decoder":
        return VideoDecoder(cfg.vae, kernels)
    if name == "image_encoder":
        return ImageEncoder(cfg.image_encoder, kernels)
    raise ValueError(f"unknown network {name!r}; expected one of {', '.join(NETWORK_NAMES)}")


def load_network(
    name: NetworkName,
    checkpoint_dir: Union[str, Path],
    kernels: KernelConfig = KernelConfig(),
    cfg: ModelConfig | None = None,
) -> nn.Cell:
    """Build ``name`` and fill it from ``checkpoint_dir`` (svd-convert / svd-train output),
    strictly: every missing, unexpected or mis-shaped tensor is reported."""
    from .keys import NETWORK_PREFIXES
    from .loading import load_into_cell, read_checkpoint_dir

    dir_cfg, weights = read_checkpoint_dir(Path(checkpoint_dir))
    net = build_network(name, cfg or dir_cfg, kernels)
    load_into_cell(net, weights, NETWORK_PREFIXES[name], strict=True)
    return net


def parameter_count(cell: nn.Cell) -> int:
    total = 0
    for _, param in cell.parameters_and_names():
        count = 1
        for d in param.shape:
            count *= d
        total += count
    return total


def parameter_shapes(cell: nn.Cell, prefix: str = "") -> Dict[str, Tuple[int, ...]]:
    return {prefix + name: tuple(param.shape) for name, param in cell.parameters_and_names()}
