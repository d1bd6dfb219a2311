"""The U-Net block plan (svdeploy.models.plan) against the key table, diffusers' real modules
and its own channel flow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, Set

import pytest

from svdeploy.config import UNetConfig, load_model_config
from svdeploy.models.keys import NETWORK_PREFIXES, sgm_parameter_shapes
from svdeploy.models.plan import (
    CONV_IN,
    DOWNSAMPLE,
    INPUT,
    OUTPUT,
    RESNET,
    TRANSFORMER,
    UPSAMPLE,
    UNetPlan,
    unet_plan,
)

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("tiny", "mid", "svd_xt")
UNET = NETWORK_PREFIXES["unet"]
# the stem and head: the only U-Net modules outside the blocks
OUTSIDE_BLOCKS = re.compile(r"(time_embed|label_emb|out)\.")


def _odd_config() -> UNetConfig:
    """Four uneven levels, three res blocks, attention at two non-adjacent levels."""
    return replace(
        load_model_config("tiny").unet,
        channel_mult=(1, 2, 2, 3),
        num_res_blocks=3,
        attention_resolutions=(2, 8),
    )


def _layer_prefixes(preset: str) -> Set[str]:
    """The layer names the key table's block parameters sit under: input_blocks.i.j /
    output_blocks.i.j / middle_block.j, with the U-Net's prefix."""
    found = set()
    for name in sgm_parameter_shapes(load_model_config(preset)):
        if not name.startswith(UNET) or OUTSIDE_BLOCKS.match(name[len(UNET) :]):
            continue
        match = re.match(
            r"((?:input_blocks|output_blocks)\.\d+\.\d+|middle_block\.\d+)\.", name[len(UNET) :]
        )
        assert match, name
        found.add(UNET + match.group(1))
    return found


@pytest.mark.parametrize("preset", PRESETS)
def test_sgm_names_are_exactly_the_key_tables_layers(preset: str) -> None:
    plan = unet_plan(load_model_config(preset).unet)
    names = [UNET + layer.sgm for layer in plan.layers()]
    assert len(names) == len(set(names))
    assert set(names) == _layer_prefixes(preset)
    # the cells rely on it: a layer's name is its block's name and its place in the block
    for block in plan.blocks():
        assert [layer.sgm for layer in block.layers] == [
            f"{block.sgm}.{j}" for j in range(len(block.layers))
        ]


def _check_channel_flow(plan: UNetPlan, cfg: UNetConfig) -> None:
    blocks = plan.blocks()
    assert blocks[0].channels_in == cfg.in_channels
    for previous, block in zip(blocks, blocks[1:]):
        assert block.channels_in == previous.channels_out + block.skip_channels, block.sgm
    for block in blocks:
        for previous, layer in zip(block.layers, block.layers[1:]):
            assert layer.channels_in == previous.channels_out, layer.sgm
    # every output block takes one input block's output, last in first out
    assert len(plan.output_blocks) == len(plan.input_blocks)
    for i, block in enumerate(plan.output_blocks):
        assert block.skip_channels == plan.input_blocks[-1 - i].channels_out
    assert all(b.skip_channels == 0 for b in plan.input_blocks + (plan.middle_block,))
    assert plan.channels_out == cfg.model_channels * cfg.channel_mult[0]


@pytest.mark.parametrize("preset", PRESETS)
def test_channel_flow_is_consistent(preset: str) -> None:
    cfg = load_model_config(preset).unet
    _check_channel_flow(unet_plan(cfg), cfg)


def test_levels_and_attention_follow_the_config() -> None:
    cfg = _odd_config()
    plan = unet_plan(cfg)
    _check_channel_flow(plan, cfg)
    assert [(lv.channels, lv.factor, lv.attention) for lv in plan.levels] == [
        (32, 1, False),
        (64, 2, True),
        (64, 4, False),
        (96, 8, True),
    ]
    # per level: num_res_blocks res blocks, a downsampler except at the last; up: one more each
    kinds = [tuple(layer.kind for layer in block.layers) for block in plan.input_blocks]
    assert kinds[0] == (CONV_IN,)
    assert kinds.count((DOWNSAMPLE,)) == len(cfg.channel_mult) - 1
    assert len(plan.input_blocks) == 1 + 4 * 3 + 3
    assert sum(1 for b in plan.output_blocks if b.layers[-1].kind == UPSAMPLE) == 3
    assert plan.output_blocks[-1].level == 0 and plan.output_blocks[0].level == 3
    for block in plan.input_blocks[1:] + plan.output_blocks:
        if block.layers[0].kind == RESNET:
            assert block.has_attention == plan.levels[block.level].attention, block.sgm
    assert plan.middle_block.has_attention
    assert {b.section for b in plan.input_blocks} == {INPUT}
    assert {b.section for b in plan.output_blocks} == {OUTPUT}


_DIFFUSERS_CLASS = {
    CONV_IN: "Conv2d",
    RESNET: "SpatioTemporalResBlock",
    TRANSFORMER: "TransformerSpatioTemporalModel",
    DOWNSAMPLE: "Downsample2D",
    UPSAMPLE: "Upsample2D",
}


@pytest.mark.parametrize("which", ["TINY_UNET", "TINY3_UNET"])
def test_diffusers_names_are_diffusers_modules(which: str) -> None:
    """Each layer's diffusers name is a module of diffusers' own U-Net, of the right class,
    with the plan's channels; together they are all of its blocks' modules."""
    diffusers = pytest.importorskip("diffusers")
    from svdeploy.models.keymap import unet_config_from_diffusers
    from svdref import diffusers_tiny

    config = getattr(diffusers_tiny, which)
    model = diffusers.UNetSpatioTemporalConditionModel(**config)
    modules: Dict[str, object] = dict(model.named_modules())
    cfg, _, _ = unet_config_from_diffusers(config, which)
    plan = unet_plan(cfg)
    for layer in plan.layers():
        module = modules[layer.diffusers]
        assert type(module).__name__ == _DIFFUSERS_CLASS[layer.kind], layer
        if layer.kind == RESNET:
            conv1, conv2 = module.spatial_res_block.conv1, module.spatial_res_block.conv2
            assert (conv1.in_channels, conv2.out_channels) == (
                layer.channels_in,
                layer.channels_out,
            )
        elif layer.kind == TRANSFORMER:
            assert module.in_channels == layer.channels_in
        else:
            conv = module if layer.kind == CONV_IN else module.conv
            assert (conv.in_channels, conv.out_channels) == (layer.channels_in, layer.channels_out)
    block_modules = {
        name
        for name in modules
        if re.fullmatch(
            r"(down|up)_blocks\.\d+\.(resnets|attentions|downsamplers|upsamplers)\.\d+"
            r"|mid_block\.(resnets|attentions)\.\d+",
            name,
        )
    }
    assert block_modules | {"conv_in"} == {layer.diffusers for layer in plan.layers()}


def test_plan_imports_no_framework() -> None:
    """The key table and svd-convert use the plan without MindSpore."""
    code = (
        "import sys, svdeploy.models.plan; "
        "print(sorted(m for m in ('mindspore', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert out.stdout.strip() == "[]"
