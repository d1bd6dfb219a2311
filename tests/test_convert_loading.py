"""svdeploy.models.loading: checkpoint directories and strict loading into MindSpore cells."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from svdeploy.config import load_model_config, save_model_config
from svdeploy.errors import CheckpointError, ConfigError
from svdeploy.models.loading import load_into_cell, load_network_weights, read_checkpoint_dir
from svdeploy.models.weights_io import save_safetensors

ms = pytest.importorskip("mindspore")
from mindspore import Parameter, nn  # noqa: E402

PREFIX = "model.diffusion_model."


class Block(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Dense(4, 3)
        self.mix_factor = Parameter(ms.Tensor(np.zeros(1, np.float32)), name="mix_factor")


class Toy(nn.Cell):
    """A stand-in for a network: nested cells, a list, a bare parameter, a float16 parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 5, 3, has_bias=True)
        self.blocks = nn.CellList([Block(), Block()])
        self.scale = Parameter(ms.Tensor(np.zeros((2, 2), np.float16)), name="scale")


def toy_weights(seed: int = 0) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal(tuple(param.shape)).astype(np.float32)
        for name, param in Toy().parameters_and_names()
    }


def test_parameter_names_are_what_we_expect() -> None:
    names = sorted(n for n, _ in Toy().parameters_and_names())
    assert names == sorted(
        [
            "conv.weight",
            "conv.bias",
            "blocks.0.proj.weight",
            "blocks.0.proj.bias",
            "blocks.0.mix_factor",
            "blocks.1.proj.weight",
            "blocks.1.proj.bias",
            "blocks.1.mix_factor",
            "scale",
        ]
    )


def test_load_into_cell_sets_every_parameter(tmp_path: Path) -> None:
    weights = toy_weights()
    file_tensors = {PREFIX + k: v for k, v in weights.items()}
    file_tensors["first_stage_model.decoder.conv_in.weight"] = np.ones(
        (2, 2), np.float32
    )  # other network
    save_safetensors(tmp_path / "w.safetensors", file_tensors)
    cell = Toy()
    counts = load_into_cell(cell, tmp_path / "w.safetensors", PREFIX)
    assert counts == {"loaded": len(weights), "missing": 0, "unexpected": 0}
    for name, param in cell.parameters_and_names():
        if name == "scale":
            assert param.dtype == ms.float16  # cast to the parameter's dtype
            assert np.array_equal(param.asnumpy(), weights[name].astype(np.float16))
        else:
            assert np.array_equal(param.asnumpy(), weights[name]), name


def test_load_network_uses_the_network_prefix(tmp_path: Path) -> None:
    weights = toy_weights(1)
    prefix = "conditioner.embedders.3.encoder."
    tensors = {prefix + k: v for k, v in weights.items()}
    # the cond-frame autoencoder's decoder side is not part of the vae_encoder network
    tensors[prefix + "post_quant_conv.weight"] = np.zeros((4, 4, 1, 1), np.float32)
    tensors[prefix + "decoder.conv_in.weight"] = np.zeros((4, 4, 3, 3), np.float32)
    save_safetensors(tmp_path / "w.safetensors", tensors)
    cell = Toy()
    assert load_network_weights(cell, tmp_path / "w.safetensors", "vae_encoder")["loaded"] == len(
        weights
    )
    assert np.array_equal(
        dict(cell.parameters_and_names())["conv.bias"].asnumpy(), weights["conv.bias"]
    )
    tensors[prefix + "encoder.extra"] = np.zeros(2, np.float32)  # inside the network: unexpected
    save_safetensors(tmp_path / "w.safetensors", tensors)
    with pytest.raises(
        CheckpointError,
        match=r"0 missing, 1 unexpected, 0 mis-shaped; unexpected: "
        r"conditioner\.embedders\.3\.encoder\.encoder\.extra$",
    ):
        load_network_weights(cell, tmp_path / "w.safetensors", "vae_encoder")
    with pytest.raises(CheckpointError, match="unknown network 'decoder'"):
        load_network_weights(cell, tmp_path / "w.safetensors", "decoder")
    with pytest.raises(CheckpointError, match="9 missing"):
        load_network_weights(cell, tmp_path / "w.safetensors", "unet")


def test_strict_errors_list_everything_and_change_nothing(tmp_path: Path) -> None:
    weights = toy_weights()
    file_tensors = {PREFIX + k: v for k, v in weights.items()}
    del file_tensors[PREFIX + "blocks.1.mix_factor"]
    file_tensors[PREFIX + "blocks.2.proj.weight"] = np.zeros((3, 4), np.float32)
    file_tensors[PREFIX + "conv.weight"] = np.zeros((5, 2, 1, 1), np.float32)
    save_safetensors(tmp_path / "w.safetensors", file_tensors)
    cell = Toy()
    before = {n: p.asnumpy().copy() for n, p in cell.parameters_and_names()}
    with pytest.raises(CheckpointError) as info:
        load_into_cell(cell, tmp_path / "w.safetensors", PREFIX)
    message = str(info.value)
    assert "1 missing, 1 unexpected, 1 mis-shaped" in message
    assert f"missing: {PREFIX}blocks.1.mix_factor" in message
    assert f"unexpected: {PREFIX}blocks.2.proj.weight" in message
    assert f"{PREFIX}conv.weight (file (5, 2, 1, 1), parameter (5, 2, 3, 3))" in message
    for name, param in cell.parameters_and_names():
        assert np.array_equal(param.asnumpy(), before[name])
    counts = load_into_cell(cell, tmp_path / "w.safetensors", PREFIX, strict=False)
    assert counts == {"loaded": len(weights) - 2, "missing": 1, "unexpected": 1}
    loaded = dict(cell.parameters_and_names())
    assert np.array_equal(loaded["blocks.0.proj.weight"].asnumpy(), weights["blocks.0.proj.weight"])
    assert np.array_equal(
        loaded["conv.weight"].asnumpy(), before["conv.weight"]
    )  # mis-shaped: untouched


def test_read_checkpoint_dir(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist or is not a directory"):
        read_checkpoint_dir(tmp_path / "none")
    (tmp_path / "d").mkdir()
    with pytest.raises(CheckpointError, match="has no config.yaml"):
        read_checkpoint_dir(tmp_path / "d")
    save_model_config(load_model_config("tiny"), tmp_path / "d" / "config.yaml")
    with pytest.raises(CheckpointError, match="has no weights.safetensors"):
        read_checkpoint_dir(tmp_path / "d")
    save_safetensors(tmp_path / "d" / "weights.safetensors", {"x": np.zeros(1, np.float32)})
    cfg, weights = read_checkpoint_dir(tmp_path / "d")
    assert cfg == load_model_config("tiny") and weights == tmp_path / "d" / "weights.safetensors"
    (tmp_path / "d" / "config.yaml").write_text("unet:\n  model_channels: abc\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: config\.unet\.model_channels = 'abc'"):
        read_checkpoint_dir(tmp_path / "d")
