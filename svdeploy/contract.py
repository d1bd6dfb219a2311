"""The artifact contract (docs/ARCHITECTURE.md, "Graph contract"), each fact defined once.

The names of the four networks and of the graphs an artifact holds, which graphs a run needs,
the static input/output shapes of every graph, and the relative error that parity checks
(export validation, benchmarks) report. Exporter, runtime, manifest, models and benchmarks
all take these from here. A core module: pure Python and NumPy, no framework, and of svdeploy
it imports nothing (see tests/test_layering.py).
"""

from __future__ import annotations

from typing import Dict, Literal, NamedTuple, Sequence, Tuple, get_args

import numpy as np

# The four networks, in pipeline order (image encoder, VAE encoder, U-Net, VAE decoder). Random
# initialisation builds them in this order after one seed, so the order is part of the contract.
NetworkName = Literal["image_encoder", "vae_encoder", "unet", "vae_decoder"]
NETWORK_NAMES: Tuple[NetworkName, ...] = get_args(NetworkName)
# The decoder's second graph, for the last F mod K frames when F mod K != 0.
TAIL_GRAPH = "vae_decoder_tail"
# Every graph an artifact may hold; a complete one holds REQUIRED_GRAPHS (and the tail graph
# when num_frames % decode_chunk_size != 0).
GRAPH_NAMES: Tuple[str, ...] = NETWORK_NAMES + (TAIL_GRAPH,)
REQUIRED_GRAPHS: Tuple[str, ...] = NETWORK_NAMES
# lite: plain ONNX converted by MindSpore Lite's converter into Lite's MindIR (Lite loads it)
GRAPH_FORMATS: Tuple[str, ...] = ("mindir", "onnx", "lite")

Shape = Tuple[int, ...]


def graph_network(graph: str) -> str:
    """The network a graph runs (the tail graph is the VAE decoder at another frame count)."""
    return "vae_decoder" if graph == TAIL_GRAPH else graph


def required_graphs(num_frames: int, decode_chunk_size: int) -> Tuple[str, ...]:
    """The graphs a run of ``num_frames`` frames decoded ``decode_chunk_size`` at a time needs."""
    return REQUIRED_GRAPHS + ((TAIL_GRAPH,) if num_frames % decode_chunk_size else ())


class GraphIO(NamedTuple):
    """One graph's tensors, name → static shape, in call order."""

    inputs: Dict[str, Shape]
    outputs: Dict[str, Shape]


def graph_specs(
    *,
    height: int,
    width: int,
    num_frames: int,
    latent_channels: int,
    latent_height: int,
    latent_width: int,
    context_dim: int,
    clip_size: int,
    guidance_batch: int,
    decode_chunk_size: int,
    networks: Sequence[str] = NETWORK_NAMES,
) -> Dict[str, GraphIO]:
    """The static shapes of the graphs of ``networks`` (graph name → GraphIO, in pipeline
    order), the table of ARCHITECTURE.md: ``B`` = guidance batch, ``F`` frames, ``C`` latent
    channels, ``h, w`` latent size, ``D`` context dim, ``K`` decode chunk. The tail graph
    comes with ``vae_decoder`` when F mod K != 0."""
    c, h, w, d = latent_channels, latent_height, latent_width, context_dim
    b, k = guidance_batch, decode_chunk_size
    n = b * num_frames

    def decoder(frames: int) -> GraphIO:
        return GraphIO({"z": (frames, c, h, w)}, {"frames": (frames, 3, height, width)})

    table = {
        "image_encoder": GraphIO(
            {"pixel_values": (1, 3, clip_size, clip_size)}, {"image_embeds": (1, 1, d)}
        ),
        "vae_encoder": GraphIO({"image": (1, 3, height, width)}, {"latent": (1, c, h, w)}),
        "unet": GraphIO(
            {"sample": (n, 2 * c, h, w), "c_noise": (1,), "context": (b, 1, d), "time_ids": (b, 3)},
            {"v": (n, c, h, w)},
        ),
        "vae_decoder": decoder(k),
    }
    specs: Dict[str, GraphIO] = {name: table[name] for name in NETWORK_NAMES if name in networks}
    if "vae_decoder" in specs and num_frames % k:
        specs[TAIL_GRAPH] = decoder(num_frames % k)
    return specs


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """‖actual − expected‖₂ / ‖expected‖₂ in float64 (inf when actual is not finite; the plain
    norm of actual when expected is all zeros). A shape mismatch is a ValueError."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    if a.shape != e.shape:
        raise ValueError(f"output shape {a.shape} differs from the reference's {e.shape}")
    if not np.all(np.isfinite(a)):
        return float("inf")
    denom = float(np.linalg.norm(e))
    return float(np.linalg.norm(a - e) / (denom if denom > 0 else 1.0))


__all__ = [
    "NetworkName",
    "NETWORK_NAMES",
    "TAIL_GRAPH",
    "GRAPH_NAMES",
    "REQUIRED_GRAPHS",
    "GRAPH_FORMATS",
    "Shape",
    "GraphIO",
    "graph_network",
    "required_graphs",
    "graph_specs",
    "relative_error",
]
