"""svdeploy.config: presets, typed loading, validation messages, YAML round trip."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

from svdeploy.config import (
    PRESETS,
    ModelConfig,
    load_model_config,
    model_config_from_dict,
    preset_path,
    save_model_config,
    to_dict,
)
from svdeploy.errors import ConfigError


def preset_dict(name: str = "svd") -> Dict[str, Any]:
    with open(preset_path(name), "r", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_validate(name: str) -> None:
    cfg = load_model_config(name)
    assert isinstance(cfg, ModelConfig)
    assert cfg.variant == name
    assert cfg.image_encoder.embed_dim == cfg.unet.context_dim
    assert cfg.height % (cfg.vae.downsample_factor * 2 ** (len(cfg.unet.channel_mult) - 1)) == 0


def test_preset_facts() -> None:
    svd, xt = load_model_config("svd"), load_model_config("svd_xt")
    assert (svd.num_frames, xt.num_frames) == (14, 25)
    assert (svd.height, svd.width) == (576, 1024)
    assert svd.unet.model_channels == 320 and svd.unet.channel_mult == (1, 2, 4, 4)
    assert svd.unet == xt.unet and svd.vae == xt.vae and svd.image_encoder == xt.image_encoder
    assert svd.sampling.max_guidance_scale == 2.5 and xt.sampling.max_guidance_scale == 3.0


def _load(tmp_path: Path, data: Dict[str, Any]) -> ModelConfig:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_model_config(path)


def test_unknown_key_is_named(tmp_path: Path) -> None:
    data = preset_dict()
    data["unet"]["model_chanels"] = 320
    with pytest.raises(ConfigError, match=r"config\.unet: unknown key\(s\) model_chanels"):
        _load(tmp_path, data)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    data = preset_dict()
    data["frames"] = 14
    with pytest.raises(ConfigError, match=r"config: unknown key\(s\) frames"):
        _load(tmp_path, data)


def test_string_for_integer(tmp_path: Path) -> None:
    data = preset_dict()
    data["unet"]["model_channels"] = "abc"
    with pytest.raises(
        ConfigError, match=r"config\.unet\.model_channels = 'abc': expected an integer"
    ):
        _load(tmp_path, data)


def test_float_for_integer(tmp_path: Path) -> None:
    data = preset_dict()
    data["unet"]["num_res_blocks"] = 2.5
    with pytest.raises(
        ConfigError, match=r"config\.unet\.num_res_blocks = 2\.5: expected an integer"
    ):
        _load(tmp_path, data)


def test_bool_is_not_an_integer(tmp_path: Path) -> None:
    data = preset_dict()
    data["num_frames"] = True
    with pytest.raises(ConfigError, match=r"config\.num_frames = True"):
        _load(tmp_path, data)


def test_list_item_type_is_checked(tmp_path: Path) -> None:
    data = preset_dict()
    data["unet"]["channel_mult"] = [1, 2, "4", 4]
    with pytest.raises(ConfigError, match=r"config\.unet\.channel_mult\[2\] = '4'"):
        _load(tmp_path, data)


def test_unet_channels_not_divisible_by_groups() -> None:
    data = preset_dict()
    data["unet"]["model_channels"] = 48  # 48·1 = 48 is not a multiple of 32 groups
    with pytest.raises(
        ConfigError, match=r"model_channels·channel_mult\[0\] = 48: must be divisible by the 32"
    ):
        model_config_from_dict(data)


def test_vae_channels_not_divisible_by_groups() -> None:
    data = preset_dict()
    data["vae"]["ch"] = 100
    with pytest.raises(ConfigError, match=r"config\.vae\.ch·ch_mult\[0\] = 100"):
        model_config_from_dict(data)


def test_heads_not_dividing_width() -> None:
    data = preset_dict()
    data["image_encoder"]["heads"] = 12  # 1280 / 12 is not an integer
    with pytest.raises(
        ConfigError, match=r"config\.image_encoder\.heads = 12: must divide width = 1280"
    ):
        model_config_from_dict(data)


def test_head_channels_not_dividing_attention_width() -> None:
    data = preset_dict()
    data["unet"]["num_head_channels"] = 96  # does not divide 320
    with pytest.raises(
        ConfigError,
        match=r"config\.unet\.num_head_channels = 96: must divide the attention width 320",
    ):
        model_config_from_dict(data)


def test_embed_dim_must_equal_context_dim() -> None:
    data = preset_dict()
    data["image_encoder"]["embed_dim"] = 768
    with pytest.raises(
        ConfigError,
        match=r"config\.image_encoder\.embed_dim = 768 must equal config\.unet\.context_dim = 1024",
    ):
        model_config_from_dict(data)


def test_video_size_must_fit_the_downsampling() -> None:
    data = preset_dict()
    data["height"] = 500
    with pytest.raises(
        ConfigError, match=r"config\.height = 500: must be a positive multiple of 64"
    ):
        model_config_from_dict(data)


def test_missing_file_and_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a preset"):
        load_model_config("svd_xxl")
    bad = tmp_path / "bad.yaml"
    bad.write_text("unet: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_model_config(bad)


@pytest.mark.parametrize("name", PRESETS)
def test_round_trip(tmp_path: Path, name: str) -> None:
    cfg = load_model_config(name)
    path = tmp_path / "out.yaml"
    save_model_config(cfg, path)
    again = load_model_config(path)
    assert again == cfg
    assert to_dict(again) == to_dict(cfg)
    assert [p.name for p in tmp_path.iterdir()] == ["out.yaml"]  # no temporary file left


def test_round_trip_keeps_changes(tmp_path: Path) -> None:
    data = copy.deepcopy(preset_dict("tiny"))
    data["num_frames"] = 7
    data["sampling"]["decode_chunk_size"] = 3
    cfg = model_config_from_dict(data)
    save_model_config(cfg, tmp_path / "c.yaml")
    again = load_model_config(tmp_path / "c.yaml")
    assert again.num_frames == 7 and again.sampling.decode_chunk_size == 3
