"""The analytic sgm key table (svdeploy.models.keys) against diffusers' real modules."""

from __future__ import annotations

from typing import Any, Dict

import pytest

from svdeploy.config import load_model_config
from svdeploy.models.keymap import model_config_from_diffusers
from svdeploy.models.keys import (
    NETWORK_PREFIXES,
    NETWORKS,
    count_parameters,
    network_of,
    network_parameter_shapes,
    sgm_parameter_shapes,
)
from svdref.checkpoints import diffusers_parameter_counts, sgm_state_dict
from svdref.diffusers_tiny import (
    TINY3_CLIP,
    TINY3_UNET,
    TINY3_VAE,
    TINY_CLIP,
    TINY_UNET,
    TINY_VAE,
    build_components,
)

MODELS = {"tiny": (TINY_UNET, TINY_VAE, TINY_CLIP), "tiny3": (TINY3_UNET, TINY3_VAE, TINY3_CLIP)}


@pytest.fixture(scope="module", params=sorted(MODELS))
def components(request: Any) -> Dict[str, Any]:
    unet, vae, clip = MODELS[request.param]
    return build_components(seed=5, unet_cfg=unet, vae_cfg=vae, clip_cfg=clip)


def _config(components: Dict[str, Any]):
    return model_config_from_diffusers(
        dict(components["unet"].config),
        dict(components["vae"].config),
        components["image_encoder"].config.to_dict(),
    )


def test_counts_match_diffusers(components: Dict[str, Any]) -> None:
    cfg = _config(components)
    counts = diffusers_parameter_counts(components)
    unet = network_parameter_shapes(cfg, "unet")
    assert (len(unet), count_parameters(unet)) == counts["unet"]
    vae = {
        **network_parameter_shapes(cfg, "vae_decoder"),
        **{"enc." + k: v for k, v in network_parameter_shapes(cfg, "vae_encoder").items()},
    }
    assert (len(vae), count_parameters(vae)) == counts["vae"]
    clip = network_parameter_shapes(cfg, "image_encoder")
    # OpenCLIP packs q, k, v (weight and bias) into in_proj_weight / in_proj_bias: 4 fewer tensors
    # per layer than transformers' separate projections, the same parameters.
    layers = cfg.image_encoder.layers
    assert (len(clip) + 4 * layers, count_parameters(clip)) == counts["image_encoder"]


def test_names_and_shapes_match_reference_mapping(components: Dict[str, Any]) -> None:
    """The reference writer's independent diffusers → sgm mapping yields exactly the table."""
    cfg = _config(components)
    reference = {k: tuple(v.shape) for k, v in sgm_state_dict(components).items()}
    table = sgm_parameter_shapes(cfg)
    assert sorted(reference) == sorted(table)
    assert {k: table[k] for k in reference} == reference


def test_tiny_preset_table_is_the_tiny_diffusers_model() -> None:
    components = build_components(seed=0)
    reference = {k: tuple(v.shape) for k, v in sgm_state_dict(components).items()}
    assert sgm_parameter_shapes(load_model_config("tiny")) == reference


def test_full_size_counts() -> None:
    """Published sizes: U-Net 1.52 B parameters, OpenCLIP ViT-H/14 vision tower 632 M."""
    cfg = load_model_config("svd_xt")
    per = {n: count_parameters(network_parameter_shapes(cfg, n)) for n in NETWORKS}
    assert (
        per["unet"] == 1_524_623_082
    )  # UNetSpatioTemporalConditionModel of stable-video-diffusion
    assert per["image_encoder"] == 632_076_800
    table = sgm_parameter_shapes(cfg)
    assert table["model.diffusion_model.input_blocks.1.0.time_stack.in_layers.2.weight"] == (
        320,
        320,
        3,
        1,
        1,
    )
    assert table[
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight"
    ] == (2560, 320)
    assert table["model.diffusion_model.input_blocks.1.1.time_stack.0.attn2.to_k.weight"] == (
        320,
        1024,
    )
    assert table["model.diffusion_model.output_blocks.2.1.conv.weight"] == (1280, 1280, 3, 3)
    assert table["model.diffusion_model.output_blocks.5.2.conv.weight"] == (1280, 1280, 3, 3)
    assert table["first_stage_model.decoder.conv_out.time_mix_conv.weight"] == (3, 3, 3, 1, 1)
    assert table["conditioner.embedders.3.encoder.quant_conv.weight"] == (8, 8, 1, 1)
    assert table["conditioner.embedders.3.encoder.encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert table["conditioner.embedders.0.open_clip.model.visual.positional_embedding"] == (
        257,
        1280,
    )
    assert table["conditioner.embedders.0.open_clip.model.visual.proj"] == (1280, 1024)
    assert table["conditioner.embedders.0.open_clip.model.visual.conv1.weight"] == (1280, 3, 14, 14)
    assert "conditioner.embedders.0.open_clip.model.visual.conv1.bias" not in table


def test_network_of() -> None:
    assert network_of("model.diffusion_model.out.2.weight") == "unet"
    assert network_of("first_stage_model.decoder.conv_in.weight") == "vae_decoder"
    assert network_of("conditioner.embedders.3.encoder.encoder.conv_in.weight") == "vae_encoder"
    assert network_of("conditioner.embedders.3.encoder.quant_conv.bias") == "vae_encoder"
    assert network_of("conditioner.embedders.3.encoder.post_quant_conv.bias") is None
    assert network_of("conditioner.embedders.3.encoder.decoder.conv_in.weight") is None
    assert network_of("first_stage_model.encoder.conv_in.weight") is None
    assert network_of("conditioner.embedders.0.open_clip.model.ln_final.weight") is None
    assert network_of("conditioner.embedders.0.open_clip.model.visual.proj") == "image_encoder"
    for network, prefix in NETWORK_PREFIXES.items():
        cfg = load_model_config("tiny")
        assert all(
            network_of(prefix + n) == network for n in network_parameter_shapes(cfg, network)
        )


def test_unknown_network() -> None:
    with pytest.raises(ValueError, match="unknown network 'text'"):
        network_parameter_shapes(load_model_config("tiny"), "text")
