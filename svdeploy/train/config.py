"""Typed training configuration (``configs/svd_train.yaml``) and dotted command-line overrides.

The file keeps the seed's layout and names (mindone ``examples/svd/configs/svd_train.yaml``):
``environment``, ``train`` (``epochs``, ``temporal_only``, ``pretrained``, ``output_dir``,
``dataset.init_args``, ``dataloader``, ``scheduler``, ``optimizer``, ``settings``) and
``LossScale``; options of our own (EDM noise, conditioning, checkpoints, precision) are new keys
with their own help text. ``svd-train --train.epochs 3`` sets ``train.epochs``: every dotted key
is checked against these dataclasses, and an unknown key or a wrong type is an error naming it.
"""

from __future__ import annotations

import copy
import math
import os
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence, Tuple, Union

import yaml

from svdeploy.config import (
    ModelConfig,
    _type_name,
    check_video_size,
    from_dict,
    preset_path,
    read_yaml,
)
from svdeploy.errors import ConfigError

from .data import VideoDatasetConfig

PathLike = Union[str, "os.PathLike[str]"]

# class_path values naming our dataset: ours, and the seed's (so its file reads unchanged).
DATASET_CLASS_PATHS = ("svdeploy.train.data.VideoDataset", "data.video_dataset.VideoDataset")


def _opt(default: Any, help: str) -> Any:
    """A dataclass field with a help text (shown by ``svd-train --help``)."""
    if isinstance(default, type) and is_dataclass(default):
        return field(default_factory=default, metadata={"help": help})
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class EnvironmentConfig:
    mode: int = _opt(
        0,
        "MindSpore execution mode: 0 = GRAPH_MODE (compiled training step), "
        "1 = PYNATIVE_MODE (debugging).",
    )
    seed: int = _opt(
        42,
        "Seed of the random initialisation and of every training draw (noise "
        "level, noise, noise augmentation, conditioning dropout).",
    )
    distributed: bool = _opt(
        False,
        "Data-parallel training over the processes started by "
        "msrun (gradients averaged); see docs/TRAINING.md.",
    )
    device_target: Literal["CPU", "GPU", "Ascend"] = _opt("CPU", "MindSpore device.")
    compile_cache: bool = _opt(
        False,
        "Keep compiled graphs under OUTPUT_DIR/compile_cache (one "
        "folder per network, shape and option set), so a --resume "
        "or a rerun skips the graph compilation.",
    )

    def validate(self, path: str) -> None:
        if self.mode not in (0, 1):
            raise ConfigError(
                f"{path}.mode = {self.mode}: expected 0 (GRAPH_MODE) or 1 (PYNATIVE_MODE)"
            )
        if self.seed < 0:
            raise ConfigError(f"{path}.seed = {self.seed}: expected an integer ≥ 0")


@dataclass
class DatasetSection:
    class_path: str = _opt(
        DATASET_CLASS_PATHS[0],
        "Dataset class; only svdeploy's VideoDataset "
        "(the seed's data.video_dataset.VideoDataset "
        "is read as the same).",
    )
    init_args: VideoDatasetConfig = _opt(VideoDatasetConfig, "")

    def validate(self, path: str) -> None:
        if self.class_path not in DATASET_CLASS_PATHS:
            raise ConfigError(
                f"{path}.class_path = {self.class_path!r}: expected one of "
                f"{', '.join(DATASET_CLASS_PATHS)}"
            )
        self.init_args.validate(f"{path}.init_args")


@dataclass
class DataloaderConfig:
    batch_size: int = _opt(1, "Videos per micro-batch (one forward/backward pass).")
    shuffle: Optional[bool] = _opt(
        True,
        "Shuffle the videos each epoch (sets train.dataset.init_args.shuffle; null: use that).",
    )
    drop_remainder: bool = _opt(
        True,
        "Steps per epoch = videos ÷ (batch_size × "
        "gradient_accumulation_steps), rounded down (true) or up.",
    )

    def validate(self, path: str) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"{path}.batch_size = {self.batch_size}: expected an integer ≥ 1")


@dataclass
class LRSchedulerConfig:
    name: Literal["cosine_decay", "constant"] = _opt(
        "cosine_decay",
        "Learning-rate schedule after the warm-up: cosine_decay (lr → end_lr "
        "over decay_steps) or constant.",
    )
    lr: float = _opt(5.0e-6, "Peak learning rate.")
    end_lr: float = _opt(1.0e-7, "Final learning rate of cosine_decay.")
    warmup_steps: int = _opt(50, "Linear warm-up: step s (0-based) uses lr·(s+1)/warmup_steps.")
    decay_steps: Optional[int] = _opt(
        None, "Length of the cosine decay in optimizer steps; null: all steps after the warm-up."
    )

    def validate(self, path: str) -> None:
        for name in ("lr", "end_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{path}.{name} = {value}: expected a number ≥ 0")
        if self.warmup_steps < 0:
            raise ConfigError(f"{path}.warmup_steps = {self.warmup_steps}: expected an integer ≥ 0")
        if self.decay_steps is not None and self.decay_steps < 1:
            raise ConfigError(
                f"{path}.decay_steps = {self.decay_steps}: expected an integer ≥ 1 or null"
            )


@dataclass
class OptimizerConfig:
    name: Literal["adamw"] = _opt(
        "adamw", "AdamW (decoupled weight decay, bias-corrected moments, as torch.optim.AdamW)."
    )
    betas: Tuple[float, ...] = _opt((0.9, 0.98), "Adam β1, β2.")
    weight_decay: float = _opt(
        0.01,
        "Decoupled weight decay, applied to weight matrices and "
        "kernels (ndim ≥ 2), not to biases, norms or mix factors.",
    )
    eps: float = _opt(1.0e-8, "Adam ε.")

    def validate(self, path: str) -> None:
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"{path}.betas = {list(self.betas)}: expected two numbers in [0, 1)")
        if not self.weight_decay >= 0:
            raise ConfigError(f"{path}.weight_decay = {self.weight_decay}: expected a number ≥ 0")
        if not self.eps > 0:
            raise ConfigError(f"{path}.eps = {self.eps}: expected a number > 0")


@dataclass
class SettingsConfig:
    drop_overflow_update: bool = _opt(
        True,
        "Skip the optimizer update of a step whose gradients "
        "are not finite (false applies it anyway, as the seed "
        "allows; non-finite values then reach the weights).",
    )
    gradient_accumulation_steps: int = _opt(
        5, "Micro-batches whose gradients are averaged into one optimizer step."
    )
    clip_grad: bool = _opt(True, "Clip the global gradient norm.")
    clip_norm: float = _opt(1.0, "Maximum global gradient norm when clip_grad is true.")

    def validate(self, path: str) -> None:
        if self.gradient_accumulation_steps < 1:
            raise ConfigError(
                f"{path}.gradient_accumulation_steps = "
                f"{self.gradient_accumulation_steps}: expected an integer ≥ 1"
            )
        if not self.clip_norm > 0:
            raise ConfigError(f"{path}.clip_norm = {self.clip_norm}: expected a number > 0")


@dataclass
class DiffusionConfig:
    """EDM training of the v-prediction U-Net (sgm StandardDiffusionLoss + EDMSampling +
    VScalingWithEDMcNoise + EDMWeighting(sigma_data=1), mindone's svd.yaml values)."""

    p_mean: float = _opt(
        1.0,
        "Noise levels: ln σ ~ N(p_mean, p_std²), one σ per video "
        "(mindone svd.yaml EDMSampling: 1.0).",
    )
    p_std: float = _opt(1.6, "Standard deviation of ln σ (mindone: 1.6); 0 gives σ = e^p_mean.")
    cond_aug_mean: float = _opt(
        -3.0,
        "Noise augmentation of the conditioning frame: ln(cond_aug) "
        "~ N(cond_aug_mean, cond_aug_std²), one per video (SVD paper "
        "and mindone: mean −3.0).",
    )
    cond_aug_std: float = _opt(
        0.5,
        "Standard deviation of ln(cond_aug) (SVD paper: 0.5; mindone's "
        "dataset passes 0.5² = 0.25 to numpy's lognormal).",
    )
    cond_aug: Optional[float] = _opt(
        None,
        "A fixed cond_aug for every video instead of the "
        "log-normal draw (e.g. 0.02, the inference default).",
    )
    conditioning_dropout: float = _opt(
        0.1,
        "Probability that a video's CLIP embedding and image "
        "latent are both zeroed (trains the unconditional "
        "branch of classifier-free guidance).",
    )

    def validate(self, path: str) -> None:
        for name in ("p_mean", "cond_aug_mean"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(
                    f"{path}.{name} = {getattr(self, name)}: expected a finite number"
                )
        for name in ("p_std", "cond_aug_std"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{path}.{name} = {value}: expected a number ≥ 0")
        if self.cond_aug is not None and not (math.isfinite(self.cond_aug) and self.cond_aug >= 0):
            raise ConfigError(f"{path}.cond_aug = {self.cond_aug}: expected a number ≥ 0 or null")
        if not 0.0 <= self.conditioning_dropout <= 1.0:
            raise ConfigError(
                f"{path}.conditioning_dropout = {self.conditioning_dropout}: "
                "expected a probability in [0, 1]"
            )


@dataclass
class AutoencoderConfig:
    """The optional first stage: fit the VAE (encoder and temporal decoder) to the training
    clips before the U-Net is trained, for a model trained from scratch (the demo model)."""

    steps: int = _opt(
        0,
        "Optimizer steps of the autoencoder stage; 0 skips it (fine-tuning "
        "keeps the pretrained VAE).",
    )
    batch_size: int = _opt(
        2,
        "Clips per autoencoder step (all their frames are decoded "
        "together, so the temporal decoder learns on whole clips).",
    )
    lr: float = _opt(
        1.0e-3, "Peak learning rate (Adam), after a linear warm-up, cosine decay to lr/20."
    )
    warmup_steps: int = _opt(50, "Linear warm-up steps of the autoencoder stage.")
    kl_weight: float = _opt(
        1.0e-4,
        "Weight of the KL term (mean over latent elements) against "
        "the reconstruction MSE (mean over pixels in [−1, 1]).",
    )
    object_weight: float = _opt(
        0.0,
        "Extra reconstruction weight of pixels that differ from the frame's "
        "background (its border median): 1 + object_weight where they differ "
        "by 0.05 or more on the [0, 1] scale, 1 on the background; 0 is plain MSE. "
        "For worlds whose objects cover a few % of the frame (the demo model: 20).",
    )
    decoder_steps: int = _opt(
        0,
        "Steps after the joint ones that train the decoder alone (the encoder "
        "frozen, so the latents the U-Net learns on do not move); 0: none.",
    )
    decoder_object_weight: float = _opt(
        0.0, "object_weight of the decoder-only steps (see object_weight)."
    )
    scale_samples: int = _opt(
        64,
        "Clips encoded after training to set vae.scale_factor = "
        "1 / std of the latents (as Stable Diffusion's 0.18215 was "
        "chosen), written into the checkpoint's config.yaml.",
    )

    def validate(self, path: str) -> None:
        for name in ("steps", "warmup_steps", "decoder_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name} = {getattr(self, name)}: expected an integer ≥ 0")
        for name in ("batch_size", "scale_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{path}.{name} = {getattr(self, name)}: expected an integer ≥ 1")
        for name in ("lr", "kl_weight", "object_weight", "decoder_object_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{path}.{name} = {value}: expected a number ≥ 0")


@dataclass
class TrainSection:
    epochs: int = _opt(
        1000,
        "Passes over the videos; sets the number of optimizer steps (see "
        "dataloader.drop_remainder) unless max_steps is given.",
    )
    max_steps: Optional[int] = _opt(None, "Total optimizer steps; overrides epochs.")
    temporal_only: bool = _opt(
        True,
        "Train only the U-Net's temporal parameters (names with "
        "time_stack, time_mixer or time_pos_embed); the spatial "
        "ones stay bit-identical.",
    )
    pretrained: Optional[str] = _opt(
        None,
        "Checkpoint directory to start from (svd-convert "
        "output: config.yaml + weights.safetensors), or "
        "demo (the shipped moving-shapes model).",
    )
    random_init: bool = _opt(
        False,
        "Start from randomly initialised networks instead of "
        "train.pretrained (tests and smoke runs); the weights are "
        "written to OUTPUT_DIR/random_init first.",
    )
    output_dir: str = _opt("output/", "Where checkpoints/, train_log.csv and train_config.yaml go.")
    compute_dtype: Literal["fp32", "fp16", "bf16"] = _opt(
        "fp32",
        "Precision of the U-Net's matmuls and convolutions (weights, optimizer state, "
        "norms and the loss stay float32). Use LossScale with fp16.",
    )
    conv: Literal["auto", "native", "im2col"] = _opt(
        "im2col",
        "Spatial convolutions of the training graphs (U-Net, and the encoders): native "
        "(MindSpore's Conv2D), im2col (MindSpore's Im2Col + one GEMM, whose gradient is "
        "as quick; the default, so a resumed or data-parallel run computes the same "
        "numbers on every worker) or auto (time both once, as svd-export --conv auto).",
    )
    latent_cache_mb: int = _opt(
        1024,
        "Keep the frozen VAE encoder's latents of clips already seen, up to this many MB "
        "(0 = off): a clip seen again (every epoch after the first) skips the encoder. The "
        "encoder is frozen and deterministic, so a cached latent is the one it would "
        "compute again; resumed runs give the same numbers.",
    )
    save_ckpt_interval: int = _opt(
        100,
        "Write a checkpoint every this many optimizer steps (and always after the last one); "
        "the autoencoder stage saves where it stands as often (OUTPUT_DIR/autoencoder.progress), "
        "so that an interrupted stage resumes.",
    )
    ckpt_max_keep: Optional[int] = _opt(
        10, "Keep only the newest this many checkpoints; null keeps all."
    )
    dataset: DatasetSection = _opt(DatasetSection, "")
    dataloader: DataloaderConfig = _opt(DataloaderConfig, "")
    scheduler: LRSchedulerConfig = _opt(LRSchedulerConfig, "")
    optimizer: OptimizerConfig = _opt(OptimizerConfig, "")
    settings: SettingsConfig = _opt(SettingsConfig, "")
    diffusion: DiffusionConfig = _opt(DiffusionConfig, "")
    autoencoder: AutoencoderConfig = _opt(AutoencoderConfig, "")

    def validate(self, path: str) -> None:
        if self.epochs < 1:
            raise ConfigError(f"{path}.epochs = {self.epochs}: expected an integer ≥ 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(
                f"{path}.max_steps = {self.max_steps}: expected an integer ≥ 1 or null"
            )
        if self.random_init and self.pretrained:
            raise ConfigError(
                f"{path}.random_init = true and {path}.pretrained = "
                f"{self.pretrained!r}: give one of them, not both"
            )
        if not self.random_init and not self.pretrained:
            raise ConfigError(
                f"{path}.pretrained is not set: expected a checkpoint directory "
                f"(svd-convert output), or {path}.random_init = true"
            )
        if not self.output_dir:
            raise ConfigError(f"{path}.output_dir is empty: expected a directory")
        if self.latent_cache_mb < 0:
            raise ConfigError(
                f"{path}.latent_cache_mb = {self.latent_cache_mb}: expected an "
                "integer ≥ 0 (0 turns the cache off)"
            )
        if self.save_ckpt_interval < 1:
            raise ConfigError(
                f"{path}.save_ckpt_interval = {self.save_ckpt_interval}: expected an integer ≥ 1"
            )
        if self.ckpt_max_keep is not None and self.ckpt_max_keep < 1:
            raise ConfigError(
                f"{path}.ckpt_max_keep = {self.ckpt_max_keep}: expected an integer ≥ 1 or null"
            )
        shuffle = self.dataloader.shuffle
        if shuffle is not None:
            self.dataset.init_args.shuffle = shuffle  # the seed's name wins; one value is used
        self.dataset.validate(f"{path}.dataset")
        self.dataloader.validate(f"{path}.dataloader")
        self.scheduler.validate(f"{path}.scheduler")
        self.optimizer.validate(f"{path}.optimizer")
        self.settings.validate(f"{path}.settings")
        self.diffusion.validate(f"{path}.diffusion")
        self.autoencoder.validate(f"{path}.autoencoder")


@dataclass
class LossScaleConfig:
    """Dynamic loss scaling (the seed's names, MindSpore DynamicLossScaleUpdateCell semantics)."""

    loss_scale_value: float = _opt(
        1.0, "Initial loss scale (gradients are computed for loss × scale, then divided by it)."
    )
    scale_factor: float = _opt(
        2.0,
        "On non-finite gradients the scale is divided by this (not "
        "below 1); after scale_window finite steps it is multiplied. "
        "1 keeps the scale fixed.",
    )
    scale_window: int = _opt(1000, "Finite steps in a row before the scale grows.")

    def validate(self, path: str) -> None:
        if not (math.isfinite(self.loss_scale_value) and self.loss_scale_value >= 1):
            raise ConfigError(
                f"{path}.loss_scale_value = {self.loss_scale_value}: expected a number ≥ 1"
            )
        if not (math.isfinite(self.scale_factor) and self.scale_factor >= 1):
            raise ConfigError(f"{path}.scale_factor = {self.scale_factor}: expected a number ≥ 1")
        if self.scale_window < 1:
            raise ConfigError(f"{path}.scale_window = {self.scale_window}: expected an integer ≥ 1")


@dataclass
class TrainingConfig:
    environment: EnvironmentConfig = _opt(EnvironmentConfig, "")
    train: TrainSection = _opt(TrainSection, "")
    LossScale: LossScaleConfig = _opt(LossScaleConfig, "")

    def validate(self) -> None:
        self.environment.validate("environment")
        self.train.validate("train")
        self.LossScale.validate("LossScale")


# ---------------------------------------------------------------------------------------------
# Dotted keys
# ---------------------------------------------------------------------------------------------
def _hints(cls: Any) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def iter_options(
    cls: Any = TrainingConfig, prefix: str = ""
) -> Iterator[Tuple[str, Any, Any, str]]:
    """Every leaf key as (dotted name, annotation, default, help), in declaration order."""
    hints = _hints(cls)
    for f in fields(cls):
        tp = hints[f.name]
        name = f"{prefix}{f.name}"
        if is_dataclass(tp):
            yield from iter_options(tp, name + ".")
            continue
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        help_text = f.metadata.get("help", "")
        if not help_text and cls is VideoDatasetConfig:
            help_text = DATASET_HELP.get(f.name, "")
        yield name, tp, default, help_text


def option_annotation(key: str) -> Any:
    """The annotation of dotted ``key`` (a leaf), or ConfigError naming the unknown part."""
    cls: Any = TrainingConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not is_dataclass(cls):
            raise ConfigError(
                f"--{key}: unknown option ({'.'.join(parts[:depth])} is a value, not a section)"
            )
        hints = _hints(cls)
        if part not in hints:
            section = ".".join(parts[:depth]) or "the top level"
            raise ConfigError(
                f"--{key}: unknown option; {section} has keys "
                f"{', '.join(f.name for f in fields(cls))}"
            )
        cls = hints[part]
    if is_dataclass(cls):
        raise ConfigError(
            f"--{key} names a section; expected one of its keys: "
            f"{', '.join(key + '.' + f.name for f in fields(cls))}"
        )
    return cls


def _accepts_str(tp: Any) -> bool:
    if tp is str:
        return True
    origin = typing.get_origin(tp)
    if origin is Union:
        return any(_accepts_str(a) for a in typing.get_args(tp))
    if origin is Literal:
        return any(isinstance(a, str) for a in typing.get_args(tp))
    return False


def parse_override_value(key: str, text: str) -> Any:
    """A command-line value → Python, read as YAML (``3``, ``1e-5``, ``true``, ``null``,
    ``[0.9, 0.98]``); a key that takes a string keeps the text as written (a directory named
    ``2024`` stays a string), except ``null`` for an optional one."""
    tp = option_annotation(key)
    try:
        value = yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        value = text
    if _accepts_str(tp) and value is not None and not isinstance(value, str):
        value = text
    return value


def parse_override_args(args: Sequence[str]) -> List[Tuple[str, Any]]:
    """``["--train.epochs", "3", "--train.temporal_only=false"]`` → [(key, value), ...]."""
    out: List[Tuple[str, Any]] = []
    i = 0
    args = list(args)
    while i < len(args):
        token = args[i]
        if not token.startswith("--") or len(token) <= 2:
            raise ConfigError(
                f"unexpected argument {token!r}: overrides look like "
                "--section.key VALUE or --section.key=VALUE"
            )
        body = token[2:]
        if "=" in body:
            key, text = body.split("=", 1)
            i += 1
        else:
            key = body
            if i + 1 >= len(args):
                raise ConfigError(f"--{key}: missing value")
            text = args[i + 1]
            i += 2
        out.append((key, parse_override_value(key, text)))
    return out


def apply_overrides(data: Dict[str, Any], overrides: Sequence[Tuple[str, Any]]) -> Dict[str, Any]:
    """Set each dotted key in a copy of the raw YAML mapping (sections created as needed)."""
    data = copy.deepcopy(data) if data else {}
    for key, value in overrides:
        option_annotation(key)  # unknown keys fail here, named in full
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--{key}: {part} in the config file is {child!r}, not a section")
            node = child
        node[parts[-1]] = value
    return data


def default_config_path() -> Path:
    return preset_path("svd_train")


def load_training_config(
    path: Optional[PathLike] = None,
    overrides: Sequence[Tuple[str, Any]] = (),
    model: Optional[ModelConfig] = None,
) -> TrainingConfig:
    """Read the YAML (default: the packaged ``svd_train.yaml``), apply dotted overrides, fill
    the clip size from ``model`` when the file does not give one, and validate.

    Type errors name the dotted key (``train.epochs = 'x': expected an integer``).
    """
    raw = read_yaml(path if path is not None else default_config_path()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with environment / train / LossScale")
    raw = apply_overrides(raw, overrides)
    if model is not None:
        # The clip size defaults to the model's video size (the seed crops to 576×1024).
        train = raw.setdefault("train", {}) or {}
        raw["train"] = train
        dataset = train.setdefault("dataset", {}) or {}
        train["dataset"] = dataset
        init_args = dataset.setdefault("init_args", {}) or {}
        dataset["init_args"] = init_args
        if isinstance(init_args, dict):
            init_args.setdefault("height", model.height)
            init_args.setdefault("width", model.width)
    cfg = training_config_from_dict(raw)
    if model is not None:
        init = cfg.train.dataset.init_args
        check_video_size(model, init.height, init.width, init.frames, "train.dataset.init_args")
    return cfg


def training_config_from_dict(raw: Dict[str, Any]) -> TrainingConfig:
    """Typed, validated config from a raw mapping; messages name keys as ``train.epochs``."""
    hints = _hints(TrainingConfig)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ConfigError(
            f"unknown top-level key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(hints)}"
        )
    cfg = TrainingConfig(**{name: from_dict(tp, raw.get(name), name) for name, tp in hints.items()})
    cfg.validate()
    return cfg


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


def format_options_help() -> str:
    """One line per dotted option: name, type, default, help (for ``svd-train --help``)."""
    lines = []
    for name, tp, default, help_text in iter_options():
        shown = MODEL_SIZE_DEFAULT if name in MODEL_SIZE_KEYS else _show(default)
        head = f"--{name} ({_type_name(tp)}, default {shown})"
        lines.append(head + (f": {help_text}" if help_text else ""))
    return "\n".join(lines)


MODEL_SIZE_KEYS = ("train.dataset.init_args.height", "train.dataset.init_args.width")
MODEL_SIZE_DEFAULT = "the model's (--svd-config)"

# Help texts of the dataset's own keys (VideoDatasetConfig lives in svdeploy.train.data).
DATASET_HELP: Dict[str, str] = {
    "data_dir": "Folder the labels CSV's paths are relative to (required).",
    "metadata": "Labels CSV (path,length,motion_bucket_id; `svd-data motion-buckets` writes "
    "one; required).",
    "frames": "Frames per clip.",
    "step": "Take every step-th frame of the video.",
    "height": "Clip height in pixels (multiple of the model's size factor).",
    "width": "Clip width in pixels.",
    "default_fps": "Frame rate assumed when a video stores none.",
    "seed": "Seed of the video order and clip starts.",
    "shuffle": "Shuffle the videos each epoch (dataloader.shuffle overrides it).",
}
