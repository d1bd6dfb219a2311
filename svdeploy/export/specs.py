"""Export settings and the static input/output specs of every graph (pure Python)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from svdeploy.config import ModelConfig, check_video_size
from svdeploy.errors import ConfigError
from svdeploy.manifest import TensorSpec

# lite: plain ONNX converted by MindSpore Lite's converter (FmkType.ONNX) into Lite's MindIR
FORMATS = ("mindir", "onnx", "lite")
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
    decode_chunk_size: int = 0          # resolved: 1..num_frames
    formats: Tuple[str, ...] = ("mindir",)
    dtype: str = "fp32"
    target: str = "cpu"
    graphs: Tuple[str, ...] = ("image_encoder", "vae_encoder", "unet", "vae_decoder")
    validate: bool = True
    seed: int = 0
    conv: str = "native"                # convolution kernel of CPU MindIR graphs (KernelConfig.conv)
    conv_probe: Tuple[Tuple[str, float], ...] = ()  # seconds per probe call when conv was "auto"
    lite_python: Optional[str] = None   # interpreter with mindspore_lite (None: this one)

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
            raise ConfigError(f"--format {text!r}: {part!r} is not a format; expected a "
                              f"comma-separated list of {', '.join(FORMATS)} (or both)")
    return tuple(dict.fromkeys(names))


def resolve_settings(cfg: ModelConfig, *, frames: Optional[int] = None,
                     height: Optional[int] = None, width: Optional[int] = None,
                     guidance: bool = True, decode_chunk_size: Optional[int] = None,
                     formats: Sequence[str] = ("mindir",), dtype: str = "fp32",
                     target: str = "cpu", graphs: Optional[Sequence[str]] = None,
                     validate: bool = True, seed: int = 0, conv: str = "auto",
                     lite_python: Optional[str] = None) -> ExportSettings:
    """Fill defaults from the model config and check every value."""
    num_frames = frames if frames is not None else cfg.num_frames
    h = height if height is not None else cfg.height
    w = width if width is not None else cfg.width
    check_video_size(cfg, h, w, num_frames, "export")
    chunk = decode_chunk_size or cfg.sampling.decode_chunk_size or num_frames
    if not 1 <= chunk <= num_frames:
        raise ConfigError(f"--decode-chunk-size {chunk}: expected 1..{num_frames} (the frame count)")
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
        raise ConfigError("--dtype bf16 with --format onnx: MindSpore 2.10's ONNX exporter cannot "
                          "write bfloat16 casts; use --dtype fp16 or fp32 for ONNX, or mindir for bf16")
    if conv not in CONVS:
        raise ConfigError(f"--conv {conv!r}: expected one of {', '.join(CONVS)}")
    cpu_mindir = target == "cpu" and "mindir" in formats
    if conv not in ("auto", "native") and not cpu_mindir:
        raise ConfigError(f"--conv {conv}: only MindIR graphs for --target cpu have a choice of "
                          "convolution kernel (ONNX and Ascend graphs keep the native one)")
    probe: Tuple[Tuple[str, float], ...] = ()
    if conv == "auto":
        if cpu_mindir:
            from svdeploy.kernels.probe import conv_probe, fastest_conv

            conv, probe = fastest_conv(), tuple(sorted(conv_probe().items()))
        else:
            conv = "native"
    all_graphs = ("image_encoder", "vae_encoder", "unet", "vae_decoder")
    chosen = tuple(graphs) if graphs else all_graphs
    for g in chosen:
        if g not in all_graphs:
            raise ConfigError(f"--graph {g!r}: expected one of {', '.join(all_graphs)}")
    return ExportSettings(num_frames=num_frames, height=h, width=w, cfg=guidance,
                          decode_chunk_size=chunk, formats=formats, dtype=dtype, target=target,
                          graphs=chosen, validate=validate, seed=seed, conv=conv,
                          conv_probe=probe, lite_python=lite_python)


@dataclass
class GraphSpec:
    name: str                      # manifest graph name
    network: str                   # which network it wraps
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    frames: int = 0                # static frame count inside the graph (unet, decoders)
    file_stem: str = field(default="")

    def __post_init__(self) -> None:
        self.file_stem = self.file_stem or self.name


def graph_specs(cfg: ModelConfig, s: ExportSettings) -> List[GraphSpec]:
    """The graphs an export writes, in order, with their static shapes."""
    c = cfg.latent_channels
    f = cfg.vae.downsample_factor
    h, w = s.height // f, s.width // f
    d = cfg.unet.context_dim
    b = s.guidance_batch
    size = cfg.image_encoder.image_size
    specs: List[GraphSpec] = []
    if "image_encoder" in s.graphs:
        specs.append(GraphSpec("image_encoder", "image_encoder",
                               [TensorSpec("pixel_values", (1, 3, size, size))],
                               [TensorSpec("image_embeds", (1, 1, d))]))
    if "vae_encoder" in s.graphs:
        specs.append(GraphSpec("vae_encoder", "vae_encoder",
                               [TensorSpec("image", (1, 3, s.height, s.width))],
                               [TensorSpec("latent", (1, c, h, w))]))
    if "unet" in s.graphs:
        n = b * s.num_frames
        specs.append(GraphSpec("unet", "unet",
                               [TensorSpec("sample", (n, 2 * c, h, w)), TensorSpec("c_noise", (1,)),
                                TensorSpec("context", (b, 1, d)), TensorSpec("time_ids", (b, 3))],
                               [TensorSpec("v", (n, c, h, w))], frames=s.num_frames))
    if "vae_decoder" in s.graphs:
        k = s.decode_chunk_size
        specs.append(GraphSpec("vae_decoder", "vae_decoder",
                               [TensorSpec("z", (k, c, h, w))],
                               [TensorSpec("frames", (k, 3, s.height, s.width))], frames=k))
        if s.tail_frames:
            t = s.tail_frames
            specs.append(GraphSpec("vae_decoder_tail", "vae_decoder",
                                   [TensorSpec("z", (t, c, h, w))],
                                   [TensorSpec("frames", (t, 3, s.height, s.width))], frames=t))
    return specs
