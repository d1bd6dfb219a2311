"""svdeploy.benchmarks.flops: hand counts of small blocks, and whole networks against PyTorch's
own FLOP counter on the diffusers networks of the tiny preset."""

from __future__ import annotations

import pytest

from svdeploy.benchmarks.flops import (
    cross_attention_one_token,
    graph_flops,
    self_attention,
    spatial_video_transformer,
    unet_resblock,
    vae_attention,
    video_resblock,
)
from svdeploy.config import load_model_config


def test_resblock_matches_a_hand_count():
    # spatial ResBlock, 2 samples of 4×4, 32 → 64 channels, time embedding 128 wide
    n, h, w, cin, cout, emb = 2, 4, 4, 32, 64, 128
    conv1 = 2 * n * h * w * cout * cin * 3 * 3
    emb_linear = 2 * n * emb * cout
    conv2 = 2 * n * h * w * cout * cout * 3 * 3
    skip = 2 * n * h * w * cout * cin  # 1×1, since the width changes
    count = unet_resblock(n, h, w, cin, cout, emb)
    assert (
        count.total == conv1 + emb_linear + conv2 + skip == 1_179_648 + 32_768 + 2_359_296 + 131_072
    )
    assert count.by_kind == {"conv": conv1 + conv2 + skip, "linear": emb_linear, "attention": 0}
    # same width: no skip convolution; the temporal half adds two (3,1,1) convs and its emb layer
    same = unet_resblock(n, h, w, cout, cout, emb).total
    assert same == 2 * (2 * n * h * w * cout * cout * 9) + emb_linear
    temporal = 2 * (2 * n * h * w * cout * cout * 3) + emb_linear
    assert video_resblock(n, h, w, cout, cout, emb, 3).total == same + temporal


def test_attention_layer_matches_a_hand_count():
    seqs, length, dim = 3, 5, 8
    projections = 4 * (2 * seqs * length * dim * dim)  # q, k, v, out
    products = 2 * (2 * seqs * length * length * dim)  # Q·Kᵀ and P·V
    assert self_attention(seqs, length, dim).total == projections + products
    # VAE attention: 1×1 convolutions as projections, one head over all pixels
    n, h, w, c = 2, 3, 3, 32
    assert vae_attention(n, h, w, c).total == 4 * (2 * n * h * w * c * c) + 2 * (
        2 * n * (h * w) ** 2 * c
    )


def test_single_token_cross_attention_counts():
    seqs, length, dim, ctx, rows = 4, 6, 16, 8, 4
    # svdeploy: to_v and to_out of the one context token per row; nothing per query
    assert (
        cross_attention_one_token("svdeploy", seqs, length, dim, ctx, rows).total
        == 2 * rows * ctx * dim + 2 * rows * dim * dim
    )
    # diffusers: to_q and to_out on every query, to_k / to_v on the context, products with 1 key
    full = (
        (2 * seqs * length * dim * dim) * 2
        + 2 * (2 * rows * ctx * dim)
        + 2 * (2 * seqs * length * 1 * dim)
    )
    assert cross_attention_one_token("diffusers", seqs, length, dim, ctx, rows).total == full


def test_svdeploy_schedule_is_cheaper_only_in_the_transformers():
    cfg = load_model_config("mid")
    kwargs = dict(frames=8, height=256, width=256, guidance_batch=2)
    full = graph_flops(cfg, "unet", mode="diffusers", **kwargs)
    ours = graph_flops(cfg, "unet", mode="svdeploy", **kwargs)
    assert ours.by_kind["conv"] == full.by_kind["conv"]
    assert ours.total < full.total
    # the mid-size U-Net: the figure users compare with (diffusers, CFG batch, 8 frames, 32×32)
    assert round(full.total / 1e9, 1) == 177.4
    for graph in ("image_encoder", "vae_encoder", "vae_decoder"):
        assert (
            graph_flops(cfg, graph, mode="svdeploy", **kwargs).total
            == graph_flops(cfg, graph, mode="diffusers", **kwargs).total
        )
    assert (
        spatial_video_transformer("diffusers", 2, 8, 4, 4, 64, 32, 1).total
        > spatial_video_transformer("svdeploy", 2, 8, 4, 4, 64, 32, 1).total
    )


def test_unknown_graph_and_mode_are_refused():
    cfg = load_model_config("tiny")
    with pytest.raises(ValueError, match="graph 'decoder'"):
        graph_flops(cfg, "decoder", frames=4, height=64, width=64)
    with pytest.raises(ValueError, match="mode 'fast'"):
        graph_flops(cfg, "unet", frames=4, height=64, width=64, mode="fast")  # type: ignore[arg-type]


def test_networks_match_torch_flop_counter():
    """Whole networks of the tiny preset against torch.utils.flop_counter on diffusers' modules,
    with attention run by explicit matmuls (the CPU SDPA kernel is not counted by torch)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from diffusers.models.attention_processor import AttnProcessor
    from torch.utils.flop_counter import FlopCounterMode

    from svdeploy.benchmarks.weights import build_diffusers_networks

    cfg = load_model_config("tiny")
    nets = build_diffusers_networks(cfg, seed=0)
    nets["unet"].set_attn_processor(AttnProcessor())
    nets["vae"].set_attn_processor(AttnProcessor())
    nets["image_encoder"].config._attn_implementation = "eager"
    frames, height, width = 3, 64, 64  # an odd frame count, latents 32×32
    h, w = height // 2, width // 2
    d = cfg.unet.context_dim

    def counted(fn) -> int:
        mode = FlopCounterMode(display=False)
        with torch.no_grad(), mode:
            fn()
        return mode.get_total_flops()

    expected = {
        "unet": counted(
            lambda: nets["unet"](
                torch.randn(2, frames, 8, h, w),
                torch.tensor(0.3),
                torch.randn(2, 1, d),
                torch.randn(2, 3),
            )
        ),
        "vae_decoder": counted(
            lambda: nets["vae"].decode(torch.randn(frames, 4, h, w), num_frames=frames)
        ),
        "vae_encoder": counted(lambda: nets["vae"].encode(torch.randn(1, 3, height, width))),
        "image_encoder": counted(lambda: nets["image_encoder"](torch.randn(1, 3, 224, 224))),
    }
    for graph, flops in expected.items():
        ours = graph_flops(
            cfg,
            graph,
            frames=frames,
            height=height,
            width=width,
            guidance_batch=2,
            mode="diffusers",
        )
        assert ours.total == flops, (graph, ours.to_json(), flops)
