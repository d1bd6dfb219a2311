"""Typed configuration: dataclasses loaded from YAML and validated on load.

Keys follow Stability's config names (generative-models ``configs/inference/svd.yaml``) so a
user can read one against the other. Every error names the key path, the value, and what is
allowed. ``load_model_config`` takes a preset name (``svd``, ``svd_xt``, ``tiny``, ``mid``) or a
path to a YAML file.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Tuple, Type, TypeVar, Union, cast

import yaml

from .errors import ConfigError
from .fsutil import atomic_write_text

T = TypeVar("T")

GROUPS = 32  # GroupNorm groups used throughout SVD (sgm normalization())
PRESETS = ("svd", "svd_xt", "tiny", "mid", "demo")


# ---------------------------------------------------------------------------------------------
# Network configs
# ---------------------------------------------------------------------------------------------
@dataclass
class UNetConfig:
    """sgm ``VideoUNet`` parameters (fixed SVD choices such as linear proj_in/out, GEGLU,
    learned_with_images mixing and a (3,1,1) temporal kernel are not options)."""

    in_channels: int = 8
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: Tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: Tuple[int, ...] = (4, 2, 1)
    num_head_channels: int = 64
    transformer_depth: int = 1
    context_dim: int = 1024
    adm_in_channels: int = 768
    video_kernel_size: int = 3
    # GroupNorm eps of the res blocks: sgm uses 1e-5 everywhere; diffusers uses 1e-6 in some
    # blocks. The spatial transformer's GroupNorm is always 1e-6 (both).
    resblock_eps: float = 1e-5
    max_time_embed_period: int = 10000

    def level_channels(self) -> Tuple[int, ...]:
        return tuple(self.model_channels * m for m in self.channel_mult)

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def addition_time_embed_dim(self) -> int:
        """Sinusoid width per conditioning scalar (fps_id, motion_bucket_id, cond_aug)."""
        return self.adm_in_channels // 3

    def validate(self, path: str) -> None:
        _positive(
            self,
            path,
            "in_channels",
            "out_channels",
            "model_channels",
            "num_res_blocks",
            "num_head_channels",
            "transformer_depth",
            "context_dim",
            "adm_in_channels",
        )
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ConfigError(
                f"{path}.channel_mult = {list(self.channel_mult)}: expected a non-empty "
                "list of positive integers"
            )
        for level, ch in enumerate(self.level_channels()):
            if ch % GROUPS:
                raise ConfigError(
                    f"{path}.model_channels·channel_mult[{level}] = {ch}: must be divisible by the "
                    f"{GROUPS} GroupNorm groups"
                )
        valid_ds = {2**i for i in range(len(self.channel_mult))}
        for ds in self.attention_resolutions:
            if ds not in valid_ds:
                raise ConfigError(
                    f"{path}.attention_resolutions contains {ds}: expected values from "
                    f"{sorted(valid_ds)} (downsampling factors of the levels)"
                )
        for level, ch in enumerate(self.level_channels()):
            if (
                2**level in self.attention_resolutions or level == len(self.channel_mult) - 1
            ) and ch % self.num_head_channels:
                raise ConfigError(
                    f"{path}.num_head_channels = {self.num_head_channels}: "
                    "must divide the attention "
                    f"width {ch} of level {level}"
                )
        if self.adm_in_channels % 3 or self.addition_time_embed_dim % 2:
            raise ConfigError(
                f"{path}.adm_in_channels = {self.adm_in_channels}: must be 3 × an even "
                "number (three sinusoidal embeddings: fps_id, motion_bucket_id, cond_aug)"
            )
        if self.model_channels % 2:
            raise ConfigError(f"{path}.model_channels = {self.model_channels}: must be even")
        if self.video_kernel_size < 1 or self.video_kernel_size % 2 == 0:
            raise ConfigError(
                f"{path}.video_kernel_size = {self.video_kernel_size}: expected an odd "
                "positive integer"
            )
        _range(self, path, "resblock_eps", 0.0, 1.0)


@dataclass
class VAEConfig:
    """sgm ``Encoder`` / ``VideoDecoder`` ddconfig (attn_resolutions is empty in SVD)."""

    ch: int = 128
    ch_mult: Tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    in_channels: int = 3
    out_ch: int = 3
    scale_factor: float = 0.18215
    video_kernel_size: int = 3

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def validate(self, path: str) -> None:
        _positive(
            self, path, "ch", "num_res_blocks", "z_channels", "embed_dim", "in_channels", "out_ch"
        )
        if not self.ch_mult or any(m < 1 for m in self.ch_mult):
            raise ConfigError(
                f"{path}.ch_mult = {list(self.ch_mult)}: expected a non-empty list of "
                "positive integers"
            )
        for level, m in enumerate(self.ch_mult):
            if (self.ch * m) % GROUPS:
                raise ConfigError(
                    f"{path}.ch·ch_mult[{level}] = {self.ch * m}: must be divisible by "
                    f"the {GROUPS} GroupNorm groups"
                )
        if self.num_res_blocks < 2:
            # the temporal decoder's mid block is res → attn → res in sgm; diffusers skips the mid
            # attention with one res block, so such a checkpoint would not mean the same thing.
            raise ConfigError(
                f"{path}.num_res_blocks = {self.num_res_blocks}: SVD's VAE needs at least 2"
            )
        _range(self, path, "scale_factor", 0.0, 1e6, low_open=True)
        if self.video_kernel_size < 1 or self.video_kernel_size % 2 == 0:
            raise ConfigError(
                f"{path}.video_kernel_size = {self.video_kernel_size}: expected an odd "
                "positive integer"
            )


@dataclass
class ImageEncoderConfig:
    """OpenCLIP ``VisionTransformer`` (ViT-H/14 in SVD) with its output projection."""

    width: int = 1280
    layers: int = 32
    heads: int = 16
    mlp_width: int = 5120
    patch_size: int = 14
    image_size: int = 224
    embed_dim: int = 1024
    act: Literal["gelu", "quick_gelu"] = "gelu"
    layer_norm_eps: float = 1e-5

    def validate(self, path: str) -> None:
        _positive(
            self,
            path,
            "width",
            "layers",
            "heads",
            "mlp_width",
            "patch_size",
            "image_size",
            "embed_dim",
        )
        if self.width % self.heads:
            raise ConfigError(f"{path}.heads = {self.heads}: must divide width = {self.width}")
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"{path}.patch_size = {self.patch_size}: must divide image_size = {self.image_size}"
            )
        if self.image_size != 224:
            raise ConfigError(
                f"{path}.image_size = {self.image_size}: SVD's CLIP branch resizes to "
                "224×224, so only 224 is allowed"
            )
        _range(self, path, "layer_norm_eps", 0.0, 1.0, low_open=True)


@dataclass
class SamplingConfig:
    """Defaults of a run; the preset carries its own guidance default
    (docs/NUMERICS.md §2.5)."""

    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    min_guidance_scale: float = 1.0
    max_guidance_scale: float = 3.0
    num_inference_steps: int = 25
    decode_chunk_size: Optional[int] = None  # None: all frames in one chunk

    def validate(self, path: str) -> None:
        if self.fps < 1:
            raise ConfigError(f"{path}.fps = {self.fps}: expected an integer ≥ 1")
        if not 0 <= self.motion_bucket_id <= 255:
            raise ConfigError(f"{path}.motion_bucket_id = {self.motion_bucket_id}: expected 0..255")
        _range(self, path, "noise_aug_strength", 0.0, 10.0)
        if self.min_guidance_scale > self.max_guidance_scale:
            raise ConfigError(
                f"{path}.min_guidance_scale = {self.min_guidance_scale} is above "
                f"max_guidance_scale = {self.max_guidance_scale}"
            )
        if self.num_inference_steps < 1:
            raise ConfigError(
                f"{path}.num_inference_steps = {self.num_inference_steps}: expected ≥ 1"
            )
        if self.decode_chunk_size is not None and self.decode_chunk_size < 1:
            raise ConfigError(
                f"{path}.decode_chunk_size = {self.decode_chunk_size}: expected ≥ 1 or null"
            )


@dataclass
class SchedulerConfig:
    """EDM / Karras constants (sgm EDMDiscretization, VScalingWithEDMcNoise)."""

    sigma_min: float = 0.002
    sigma_max: float = 700.0
    rho: float = 7.0

    def validate(self, path: str) -> None:
        _range(self, path, "sigma_min", 0.0, 1e9, low_open=True)
        if self.sigma_max <= self.sigma_min:
            raise ConfigError(
                f"{path}.sigma_max = {self.sigma_max}: must be above sigma_min = {self.sigma_min}"
            )
        _range(self, path, "rho", 0.0, 1e3, low_open=True)


@dataclass
class ModelConfig:
    """A whole SVD model: the three networks, the video size and the sampling defaults."""

    variant: str = "svd"
    num_frames: int = 14
    height: int = 576
    width: int = 1024
    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    @property
    def latent_height(self) -> int:
        return self.height // self.vae.downsample_factor

    @property
    def latent_width(self) -> int:
        return self.width // self.vae.downsample_factor

    @property
    def latent_channels(self) -> int:
        return self.vae.embed_dim

    def validate(self, path: str = "config") -> None:
        if not self.variant or not isinstance(self.variant, str):
            raise ConfigError(f"{path}.variant = {self.variant!r}: expected a non-empty name")
        if self.num_frames < 1:
            raise ConfigError(f"{path}.num_frames = {self.num_frames}: expected ≥ 1")
        self.unet.validate(f"{path}.unet")
        self.vae.validate(f"{path}.vae")
        self.image_encoder.validate(f"{path}.image_encoder")
        self.sampling.validate(f"{path}.sampling")
        self.scheduler.validate(f"{path}.scheduler")
        check_video_size(self, self.height, self.width, self.num_frames, path)
        if self.image_encoder.embed_dim != self.unet.context_dim:
            raise ConfigError(
                f"{path}.image_encoder.embed_dim = {self.image_encoder.embed_dim} must equal "
                f"{path}.unet.context_dim = {self.unet.context_dim} (the embedding is the context)"
            )
        if self.unet.in_channels != 2 * self.latent_channels:
            raise ConfigError(
                f"{path}.unet.in_channels = {self.unet.in_channels}: expected 2 × vae.embed_dim = "
                f"{2 * self.latent_channels} (noisy latent + image latent)"
            )
        if self.unet.out_channels != self.latent_channels:
            raise ConfigError(
                f"{path}.unet.out_channels = {self.unet.out_channels}: expected "
                f"vae.embed_dim = {self.latent_channels}"
            )


def check_video_size(
    cfg: ModelConfig, height: int, width: int, num_frames: int, path: str = "config"
) -> None:
    """Raise ConfigError unless (height, width, frames) can run through this model."""
    if num_frames < 1:
        raise ConfigError(f"{path}.num_frames = {num_frames}: expected ≥ 1")
    factor = cfg.vae.downsample_factor * 2 ** (len(cfg.unet.channel_mult) - 1)
    for name, value in (("height", height), ("width", width)):
        if value < factor or value % factor:
            raise ConfigError(
                f"{path}.{name} = {value}: must be a positive multiple of {factor} (VAE factor "
                f"{cfg.vae.downsample_factor} × U-Net factor {factor // cfg.vae.downsample_factor})"
            )


# ---------------------------------------------------------------------------------------------
# Generic typed loading
# ---------------------------------------------------------------------------------------------
def _positive(obj: Any, path: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < 1:
            raise ConfigError(f"{path}.{name} = {value}: expected a positive integer")


def _range(obj: Any, path: str, name: str, low: float, high: float, low_open: bool = False) -> None:
    value = getattr(obj, name)
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ConfigError(f"{path}.{name} = {value}: expected a number in {bracket}{low}, {high}]")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, Tuple):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError:
                pass
        raise ConfigError(f"{path} = {value!r}: expected {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{path} = {value!r}: expected one of {', '.join(map(repr, allowed))}"
            )
        return value
    if origin in (tuple, Tuple):
        (item,) = typing.get_args(tp)[:1]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} = {value!r}: expected {_type_name(tp)}")
        return tuple(_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} = {value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} = {value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML reads "1e-5" (no dot) as a string; accept numeric strings.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} = {value!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} = {value!r}: expected a string")
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {path}")  # programming error


def from_dict(cls: Type[T], data: Any, path: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types.

    Missing keys take the dataclass default. Nested dataclasses are filled recursively.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cast(Any, cls)) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(map(str, unknown))}; allowed: "
            f"{', '.join(sorted(known))}"
        )
    kwargs = {name: _coerce(value, hints[name], f"{path}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclass → plain dict/list structure suitable for YAML or JSON."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def read_yaml(path: Union[str, os.PathLike]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None


def write_yaml_atomic(data: Any, path: Union[str, os.PathLike]) -> None:
    """``data`` as YAML at ``path``, through svdeploy.fsutil.atomic_write_text."""
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def preset_path(name: str) -> Path:
    return Path(str(resources.files("svdeploy.configs").joinpath(f"{name}.yaml")))


def load_model_config(preset_or_path: Union[str, os.PathLike]) -> ModelConfig:
    """A preset name (``svd``, ``svd_xt``, ``tiny``, ``mid``) or a YAML path → validated config."""
    text = str(preset_or_path)
    if text in PRESETS:
        path = preset_path(text)
    else:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(
                f"--config {text!r}: neither a preset ({', '.join(PRESETS)}) nor an "
                "existing YAML file"
            )
    cfg = from_dict(ModelConfig, read_yaml(path), "config")
    cfg.validate("config")
    return cfg


def model_config_from_dict(data: Any, path: str = "config") -> ModelConfig:
    cfg = from_dict(ModelConfig, data, path)
    cfg.validate(path)
    return cfg


def save_model_config(cfg: ModelConfig, path: Union[str, os.PathLike]) -> None:
    write_yaml_atomic(to_dict(cfg), path)


def replace(cfg: T, **changes: Any) -> T:
    """dataclasses.replace that re-validates ModelConfig results."""
    new = dataclasses.replace(cast(Any, cfg), **changes)
    if isinstance(new, ModelConfig):
        new.validate()
    return new
