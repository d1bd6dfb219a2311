"""Export settings and the static input/output specs of every graph (pure Python)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from svdeploy.config import ModelConfig, check_video_size
from svdeploy.contract import GRAPH_FORMATS, NETWORK_NAMES, TAIL_GRAPH, graph_network
from svdeploy.contract import graph_specs as contract_graph_specs
from svdeploy.errors import ConfigError
from svdeploy.manifest import TensorSpec

FORMATS = GRAPH_FORMATS  # lite: plain ONNX converted by MindSpore Lite (FmkType.ONNX)
DTYPES = ("fp32", "fp16", "bf16")
TARGETS = ("cpu", "ascend")
CONVS = ("auto", "native", "im2col")
# Max relative L2 error of an exported graph against the float32 in-memory network. Low
# precision graphs are compared against the float32 network too, so their bound is looser.
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}


@dataclass(frozen=True)
class ExportSettings:
    num_frames: int
    height: int
    width: int
    cfg: bool = True
    decode_chunk_size: int = 0  # resolved: 1..num_frames
    formats: Tuple[str, ...] = ("mindir",)
    dtype: str = "fp32"
    target: str = "cpu"
    graphs: Tuple[str, ...] = NETWORK_NAMES
    validate: bool = True
    seed: int = 0
    conv: str = "native"  # convolution kernel of CPU MindIR graphs (KernelConfig.conv)
    conv_probe: Tuple[Tuple[str, float], ...] = ()  # seconds per probe call when conv was "auto"
    lite_python: Optional[str] = None  # interpreter with mindspore_lite (None: this one)

    @property
    def guidance_batch(self) -> int:
        return 2 if self.cfg else 1

    @property
    def tail_frames(self) -> int:
        return self.num_frames % self.decode_chunk_size

    @property
    def tolerance(self) -> float:
        return TOLERANCE[self.dtype]


def parse_formats(text: str) -> Tuple[str, ...]:
    """``--format``: a comma-separated list of mindir, onnx, lite; ``both`` is mindir,onnx."""
    names: List[str] = []
    for part in (p.strip().lower() for p in str(text).split(",")):
        if part == "both":
            names += ["mindir", "onnx"]
        elif part in FORMATS:
            names.append(part)
        else:
            raise ConfigError(
                f"--format {text!r}: {part!r} is not a format; expected a "
                f"comma-separated list of {', '.join(FORMATS)} (or both)"
            )
    return tuple(dict.fromkeys(names))


def resolve_settings(
    cfg: ModelConfig,
    *,
    frames: Optional[int] = None,
    height: Optional[int] = None,
    width: Optional[int] = None,
    guidance: bool = True,
    decode_chunk_size: Optional[int] = None,
    formats: Sequence[str] = ("mindir",),
    dtype: str = "fp32",
    target: str = "cpu",
    graphs: Optional[Sequence[str]] = None,
    validate: bool = True,
    seed: int = 0,
    conv: str = "auto",
    lite_python: Optional[str] = None,
) -> ExportSettings:
    """Fill defaults from the model config and check every value."""
    num_frames = frames if frames is not None else cfg.num_frames
    h = height if height is not None else cfg.height
    w = width if width is not None else cfg.width
    check_video_size(cfg, h, w, num_frames, "export")
    chunk = decode_chunk_size or cfg.sampling.decode_chunk_size or num_frames
    if not 1 <= chunk <= num_frames:
        raise ConfigError(
            f"--decode-chunk-size {chunk}: expected 1..{num_frames} (the frame count)"
        )
    formats = _checked_formats(formats, dtype, target)
    conv, probe = _resolve_conv(conv, target, formats)
    chosen = tuple(graphs) if graphs else NETWORK_NAMES
    for g in chosen:
        if g not in NETWORK_NAMES:
            raise ConfigError(f"--graph {g!r}: expected one of {', '.join(NETWORK_NAMES)}")
    return ExportSettings(
        num_frames=num_frames,
        height=h,
        width=w,
        cfg=guidance,
        decode_chunk_size=chunk,
        formats=formats,
        dtype=dtype,
        target=target,
        graphs=chosen,
        validate=validate,
        seed=seed,
        conv=conv,
        conv_probe=probe,
        lite_python=lite_python,
    )


def _checked_formats(formats: Sequence[str], dtype: str, target: str) -> Tuple[str, ...]:
    """The formats without repeats, checked with the dtype and target they are written in:
    some pairs cannot be exported, and that should fail before any tracing."""
    formats = tuple(dict.fromkeys(formats))
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)} or both")
    if not formats:
        raise ConfigError(f"--format: at least one of {', '.join(FORMATS)} is needed")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if target not in TARGETS:
        raise ConfigError(f"--target {target!r}: expected one of {', '.join(TARGETS)}")
    if dtype == "bf16" and ("onnx" in formats or "lite" in formats):
        raise ConfigError(
            "--dtype bf16 with --format onnx: MindSpore 2.10's ONNX exporter cannot "
            "write bfloat16 casts; use --dtype fp16 or fp32 for ONNX, or mindir for bf16"
        )
    return formats


def _resolve_conv(
    conv: str, target: str, formats: Tuple[str, ...]
) -> Tuple[str, Tuple[Tuple[str, float], ...]]:
    """(kernel, probe timings): only CPU MindIR graphs have a choice, and "auto" settles it by
    timing the kernels on this machine (the probe is kept for the manifest)."""
    if conv not in CONVS:
        raise ConfigError(f"--conv {conv!r}: expected one of {', '.join(CONVS)}")
    cpu_mindir = target == "cpu" and "mindir" in formats
    if conv not in ("auto", "native") and not cpu_mindir:
        raise ConfigError(
            f"--conv {conv}: only MindIR graphs for --target cpu have a choice of "
            "convolution kernel (ONNX and Ascend graphs keep the native one)"
        )
    probe: Tuple[Tuple[str, float], ...] = ()
    if conv == "auto":
        if cpu_mindir:
            from svdeploy.kernels.probe import conv_probe, fastest_conv

            conv, probe = fastest_conv(), tuple(sorted(conv_probe().items()))
        else:
            conv = "native"
    return conv, probe


@dataclass
class GraphSpec:
    name: str  # manifest graph name
    network: str  # which network it wraps
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    frames: int = 0  # static frame count inside the graph (unet, decoders)
    file_stem: str = field(default="")

    def __post_init__(self) -> None:
        self.file_stem = self.file_stem or self.name


def graph_specs(cfg: ModelConfig, s: ExportSettings) -> List[GraphSpec]:
    """The graphs an export writes, in order, with their static shapes (svdeploy.contract)."""
    f = cfg.vae.downsample_factor
    shapes = contract_graph_specs(
        height=s.height,
        width=s.width,
        num_frames=s.num_frames,
        latent_channels=cfg.latent_channels,
        latent_height=s.height // f,
        latent_width=s.width // f,
        context_dim=cfg.unet.context_dim,
        clip_size=cfg.image_encoder.image_size,
        guidance_batch=s.guidance_batch,
        decode_chunk_size=s.decode_chunk_size,
        networks=s.graphs,
    )
    # static frame count inside the graph: the U-Net's clip, each decoder graph's chunk
    frames = {"unet": s.num_frames, "vae_decoder": s.decode_chunk_size, TAIL_GRAPH: s.tail_frames}
    return [
        GraphSpec(
            name,
            graph_network(name),
            [TensorSpec(n, shape) for n, shape in io.inputs.items()],
            [TensorSpec(n, shape) for n, shape in io.outputs.items()],
            frames=frames.get(name, 0),
        )
        for name, io in shapes.items()
    ]
