"""``svd-convert``: any SVD checkpoint → our canonical checkpoint directory.

Sources, recognised by their content (never by the extension):

============  =====================================================  ==========================
format        container                                              config from
============  =====================================================  ==========================
sgm           one safetensors or torch file with Stability's names   ``config`` (required)
mindone       a MindSpore ``.ckpt`` (or any file) with mindone names ``config`` (required)
diffusers     a folder with ``unet/``, ``vae/``, ``image_encoder/``  their ``config.json``
svdeploy      a folder with ``config.yaml`` + ``weights.safetensors`` its ``config.yaml``
============  =====================================================  ==========================

Only the four networks' tensors are kept (U-Net, temporal VAE decoder, the conditioning VAE
encoder + quant_conv, the OpenCLIP image tower); everything else (text tower, the first stage's
unused encoder, EMA copies, optimizer state, ...) is ignored and counted. Inside the networks the
check is strict and complete: every missing, unexpected and mis-shaped tensor is named in one
:class:`~svdeploy.errors.CheckpointError` before anything is written. Tensors are then streamed
one at a time, cast to float32, into ``weights.safetensors`` under Stability's full names; the
directory is built under a temporary sibling name and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Literal, Optional, Tuple, Union

import numpy as np

import svdeploy
from svdeploy.config import PRESETS, ModelConfig, load_model_config, save_model_config
from svdeploy.errors import CheckpointError, ConfigError
from svdeploy.fsutil import (
    apply_umask,
    check_replaceable,
    replace_dir,
    staged_dir,
)

from .keymap import (
    DIFFUSERS_COMPONENTS,
    DIFFUSERS_IGNORABLE,
    Recipe,
    apply_recipe,
    diffusers_recipes,
    looks_like_mindone,
    mindone_to_sgm,
    model_config_from_diffusers,
    network_config_differences,
    recipe_shape,
)
from .keys import NETWORKS, count_parameters, network_of, numel, sgm_parameter_shapes
from .loading import (
    CONFIG_FILE,
    PROVENANCE_FILE,
    WEIGHTS_FILE,
    format_strict_problems,
    read_checkpoint_dir,
)
from .weights_io import (
    MergedTensorFile,
    SafetensorsFile,
    SafetensorsWriter,
    TensorFile,
    TorchFile,
    open_tensor_file,
    sniff_file,
)

SourceFormat = Literal["sgm", "mindone", "diffusers", "svdeploy"]
SOURCE_FORMATS: Tuple[str, ...] = ("sgm", "mindone", "diffusers", "svdeploy")
Shape = Tuple[int, ...]


@dataclass
class ConvertReport:
    """What a conversion did (also written, as JSON, to ``convert.json``)."""

    source: Path
    source_format: str
    container: str
    out_dir: Path
    config: ModelConfig
    tensors: Dict[str, int]
    parameters: Dict[str, int]
    ignored: int
    ignored_examples: List[str]
    source_dtypes: Dict[str, int]
    seconds: float

    @property
    def weights_path(self) -> Path:
        return self.out_dir / WEIGHTS_FILE

    @property
    def total_tensors(self) -> int:
        return sum(self.tensors.values())

    @property
    def total_parameters(self) -> int:
        return sum(self.parameters.values())

    def to_json(self) -> Dict[str, object]:
        return {
            "toolkit_version": svdeploy.__version__,
            "source": str(self.source),
            "source_format": self.source_format,
            "container": self.container,
            "source_dtypes": self.source_dtypes,
            "variant": self.config.variant,
            "tensors": self.total_tensors,
            "parameters": self.total_parameters,
            "tensors_per_network": self.tensors,
            "parameters_per_network": self.parameters,
            "ignored_tensors": self.ignored,
            "ignored_examples": self.ignored_examples,
            "weights_dtype": "float32",
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        cfg = self.config
        lines = [
            f"converted {self.source} ({self.source_format}, {self.container}; "
            f"{', '.join(f'{k} ×{v}' for k, v in sorted(self.source_dtypes.items()))})"
        ]
        for network in NETWORKS:
            lines.append(
                f"  {network:<14} {self.tensors[network]:>6} tensors "
                f"{self.parameters[network]:>15,} parameters"
            )
        size_gb = self.total_parameters * 4 / 1e9
        lines.append(
            f"  {'total':<14} {self.total_tensors:>6} tensors "
            f"{self.total_parameters:>15,} parameters "
            f"({size_gb:.2f} GB float32)"
        )
        lines.append(f"  ignored: {self.ignored} tensor(s) outside the four networks")
        lines.append(f"  config: {cfg.variant}, {cfg.num_frames} frames, {cfg.height}×{cfg.width}")
        lines.append(f"  time: {self.seconds:.1f} s")
        lines.append(f"  output: {self.out_dir}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Opening a source
# ---------------------------------------------------------------------------------------------
@dataclass
class _Source:
    path: Path
    source_format: str
    container: str
    files: Dict[str, TensorFile]
    own_config: Optional[ModelConfig] = None  # diffusers / svdeploy carry their config
    rename: Callable[[str], str] = field(default=lambda name: name)

    def close(self) -> None:
        for tensor_file in self.files.values():
            tensor_file.close()


_DIFFUSERS_WEIGHTS = {
    "unet": ("diffusion_pytorch_model", "diffusion_pytorch_model"),
    "vae": ("diffusion_pytorch_model", "diffusion_pytorch_model"),
    "image_encoder": ("model", "pytorch_model"),
}  # (safetensors stem, .bin stem)


def _read_json(path: Path) -> Dict[str, object]:
    try:
        with open(path, "r", encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable JSON file: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _component_weights(folder: Path, component: str) -> TensorFile:
    """The weights of one diffusers component: plain, fp16 variant, sharded, or .bin."""
    stem, bin_stem = _DIFFUSERS_WEIGHTS[component]
    for variant in ("", ".fp16", ".bf16"):
        single = folder / f"{stem}{variant}.safetensors"
        if single.is_file():
            return SafetensorsFile(single)
        index = folder / f"{stem}{variant}.safetensors.index.json"
        if index.is_file():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index}: expected a non-empty 'weight_map'")
            shards = sorted(set(str(v) for v in weight_map.values()))
            parts: List[TensorFile] = []
            try:
                for shard in shards:
                    parts.append(SafetensorsFile(folder / shard))
            except BaseException:
                for part in parts:
                    part.close()
                raise
            return MergedTensorFile(index, parts)
    for variant in ("", ".fp16"):
        bin_file = folder / f"{bin_stem}{variant}.bin"
        if bin_file.is_file():
            return TorchFile(bin_file)
    candidates = sorted(folder.glob("*.safetensors"))
    if len(candidates) == 1:
        return SafetensorsFile(candidates[0])
    raise CheckpointError(
        f"{folder} has no weights: expected {stem}.safetensors (or its .fp16 variant, "
        f"a sharded index, or {bin_stem}.bin)"
    )


def _open_diffusers(src: Path) -> _Source:
    absent = [c for c in DIFFUSERS_COMPONENTS if not (src / c).is_dir()]
    if absent:
        raise CheckpointError(
            f"{src} looks like a diffusers folder but has no {', '.join(a + '/' for a in absent)}; "
            f"expected {', '.join(c + '/' for c in DIFFUSERS_COMPONENTS)} "
            "each with config.json and weights"
        )
    configs = {c: _read_json(src / c / "config.json") for c in DIFFUSERS_COMPONENTS}
    cfg = model_config_from_diffusers(
        configs["unet"], configs["vae"], configs["image_encoder"], str(src)
    )
    files: Dict[str, TensorFile] = {}
    try:
        for component in DIFFUSERS_COMPONENTS:
            files[component] = _component_weights(src / component, component)
    except BaseException:
        for tensor_file in files.values():
            tensor_file.close()
        raise
    return _Source(src, "diffusers", "diffusers folder", files, own_config=cfg)


def _directory_kind(src: Path) -> str:
    if (src / CONFIG_FILE).is_file() or (src / WEIGHTS_FILE).is_file():
        return "svdeploy"
    if (
        any((src / c).exists() for c in DIFFUSERS_COMPONENTS)
        or (src / "model_index.json").is_file()
    ):
        return "diffusers"
    layouts = (
        f"a diffusers folder (unet/, vae/, image_encoder/) or an svdeploy checkpoint "
        f"({CONFIG_FILE} + {WEIGHTS_FILE})"
    )
    if not any(src.iterdir()):
        raise CheckpointError(
            f"{src} is an empty directory; expected {layouts}, or a checkpoint file"
        )
    raise CheckpointError(f"{src} is a directory but not {layouts}")


def _open_source(src: Path, source_format: Optional[str]) -> _Source:
    if source_format is not None and source_format not in SOURCE_FORMATS:
        raise CheckpointError(
            f"--from {source_format!r}: expected one of {', '.join(SOURCE_FORMATS)}"
        )
    if not src.exists():
        raise CheckpointError(f"source {str(src)!r} does not exist")
    if src.is_dir():
        kind = _directory_kind(src) if source_format is None else source_format
        if kind not in ("diffusers", "svdeploy"):
            raise CheckpointError(
                f"--from {kind} expects a single checkpoint file, but {src} is a directory"
            )
        if kind == "diffusers":
            return _open_diffusers(src)
        cfg, weights = read_checkpoint_dir(src)
        return _Source(
            src, "svdeploy", "svdeploy directory", {"": SafetensorsFile(weights)}, own_config=cfg
        )
    if source_format in ("diffusers", "svdeploy"):
        raise CheckpointError(f"--from {source_format} expects a directory, but {src} is a file")
    container = {"safetensors": "safetensors", "torch": "torch", "mindspore": "MindSpore ckpt"}[
        sniff_file(src)
    ]
    tensor_file = open_tensor_file(src)
    naming = source_format
    if naming is None:
        naming = "mindone" if looks_like_mindone(list(tensor_file.infos)) else "sgm"
    rename = mindone_to_sgm if naming == "mindone" else (lambda name: name)
    return _Source(src, naming, container, {"": tensor_file}, rename=rename)


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------
def _load_config(config: Union[str, os.PathLike, ModelConfig]) -> Tuple[ModelConfig, str]:
    if isinstance(config, ModelConfig):
        config.validate("config")
        return config, f"config {config.variant!r}"
    text = str(config)
    label = f"preset {text!r}" if text in PRESETS else f"config {text!r}"
    return load_model_config(config), label


def _fitting_presets(found: Dict[str, Shape]) -> List[str]:
    return [p for p in PRESETS if sgm_parameter_shapes(load_model_config(p)) == found]


def _resolve_config(
    source: _Source,
    config: Union[str, os.PathLike, ModelConfig, None],
    found_shapes: Optional[Dict[str, Shape]],
) -> Tuple[ModelConfig, str]:
    if source.own_config is not None:
        if config is None:
            where = "config.json files" if source.source_format == "diffusers" else CONFIG_FILE
            return source.own_config, f"its {where}"
        cfg, label = _load_config(config)
        differences = network_config_differences(source.own_config, cfg)
        if differences:
            raise ConfigError(
                f"{label} does not describe the networks of "
                f"{source.path} ({source.source_format}): "
                + "; ".join(f"{d} (source vs --config)" for d in differences)
            )
        return cfg, label
    if config is None:
        fits = _fitting_presets(found_shapes or {})
        hint = (
            f"; its tensors fit preset(s) {', '.join(fits)}"
            if fits
            else "; its tensors fit none of the presets, so pass a YAML file"
        )
        raise ConfigError(
            f"{source.path} ({source.source_format}) does "
            "not say which model it is: pass --config svd "
            "(14 frames) or --config svd_xt (25 frames), "
            f"another preset ({', '.join(PRESETS)}), or a "
            f"YAML file{hint}"
        )
    return _load_config(config)


# ---------------------------------------------------------------------------------------------
# Planning: which source tensors make which sgm tensor, with the strict check
# ---------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    recipes: Dict[str, Recipe]
    expected: Dict[str, Shape]
    ignored: List[str]


def _single_file_candidates(source: _Source) -> Tuple[Dict[str, Recipe], List[str], List[str]]:
    """(target → recipe for every network tensor, conflicts, ignored names) of a one-file source."""
    tensor_file = source.files[""]
    candidates: Dict[str, Recipe] = {}
    conflicts: List[str] = []
    ignored = sorted(tensor_file.non_tensors)
    for name in tensor_file.infos:
        target = source.rename(name)
        if network_of(target) is None:
            ignored.append(name)
            continue
        if target in candidates:
            other = candidates[target].sources[0][1]
            conflicts.append(f"{name} (also given by {other} as {target})")
            continue
        candidates[target] = Recipe(target, (("", name),))
    return candidates, conflicts, ignored


def _shape_of(source: _Source, recipe: Recipe) -> Optional[Shape]:
    shapes = [source.files[key].infos[name].shape for key, name in recipe.sources]
    return recipe_shape(recipe, shapes)


def _describe_source(recipe: Recipe, source: _Source) -> str:
    names = ", ".join(f"{k}/{n}" if k else n for k, n in recipe.sources)
    return names if names == recipe.target else f"{names} → {recipe.target}"


def _plan_single_file(
    source: _Source,
    cfg: ModelConfig,
    label: str,
    candidates: Dict[str, Recipe],
    conflicts: List[str],
    ignored: List[str],
) -> _Plan:
    expected = sgm_parameter_shapes(cfg)
    if not candidates:
        first = ", ".join(list(source.files[""].infos)[:3]) or "none"
        raise CheckpointError(
            f"{source.path} ({source.source_format}) holds no "
            "tensor of the four SVD networks (names like "
            "model.diffusion_model.*, first_stage_model.decoder.*, "
            "conditioner.embedders.*); its first "
            f"names are: {first}. A diffusers component "
            "file? Then convert the whole diffusers folder"
        )
    missing = [t for t in expected if t not in candidates]
    unexpected = [
        _describe_source(r, source) for t, r in candidates.items() if t not in expected
    ] + conflicts
    misshaped = []
    found: Dict[str, Shape] = {}
    for target, recipe in candidates.items():
        shape = _shape_of(source, recipe)
        found[target] = shape if shape is not None else ()
        if target in expected and shape != expected[target]:
            misshaped.append(
                f"{_describe_source(recipe, source)} (file {shape}, expected {expected[target]})"
            )
    if missing or unexpected or misshaped:
        fits = _fitting_presets(found)
        hint = (
            f"the file's tensors fit preset(s) {', '.join(fits)}"
            if fits
            else "the file's tensors fit none of the presets"
        )
        raise CheckpointError(
            f"{source.path} ({source.source_format}) does not fit {label}: "
            f"{format_strict_problems(sorted(missing), sorted(unexpected), sorted(misshaped))}; "
            f"{hint}"
        )
    return _Plan({t: candidates[t] for t in expected}, expected, ignored)


def _plan_diffusers(source: _Source, cfg: ModelConfig, label: str) -> _Plan:
    expected = sgm_parameter_shapes(cfg)
    present = {
        (key, name) for key, tensor_file in source.files.items() for name in tensor_file.infos
    }
    consumed = set()
    missing, misshaped = [], []
    recipes = diffusers_recipes(cfg)
    for target, recipe in recipes.items():
        absent = [f"{k}/{n}" for k, n in recipe.sources if (k, n) not in present]
        consumed.update(recipe.sources)  # q and v are not "unexpected" when only k is missing
        if absent:
            missing.extend(absent)
            continue
        shape = _shape_of(source, recipe)
        if shape != expected[target]:
            shapes = [source.files[k].infos[n].shape for k, n in recipe.sources]
            misshaped.append(
                f"{_describe_source(recipe, source)} (file {', '.join(map(str, shapes))}, "
                f"expected {expected[target]})"
            )
    leftovers = present - consumed
    ignored = sorted(f"{k}/{n}" for k, n in leftovers if (k, n) in DIFFUSERS_IGNORABLE)
    unexpected = sorted(f"{k}/{n}" for k, n in leftovers if (k, n) not in DIFFUSERS_IGNORABLE)
    for key, tensor_file in source.files.items():
        ignored.extend(f"{key}/{n}" for n in tensor_file.non_tensors)
    if missing or unexpected or misshaped:
        raise CheckpointError(
            f"{source.path} (diffusers) does not fit {label}: "
            f"{format_strict_problems(sorted(missing), unexpected, sorted(misshaped))}"
        )
    return _Plan(recipes, expected, ignored)


# ---------------------------------------------------------------------------------------------
# Output directory
# ---------------------------------------------------------------------------------------------
def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"--out {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise CheckpointError(
            f"--out {out_dir} exists and is not empty; pass --overwrite to replace it"
        )


def _move_into_place(tmp_dir: Path, out_dir: Path, overwrite: bool) -> None:
    _check_out_dir(out_dir, overwrite)  # again: it may have appeared while we worked
    replace_dir(tmp_dir, out_dir)


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------
def _write_weights(source: _Source, plan: _Plan, path: Path, progress: bool) -> Counter:
    from tqdm import tqdm

    names = sorted(plan.expected)
    entries = [(name, plan.expected[name], "F32") for name in names]
    dtypes: Counter = Counter()
    total_bytes = 4 * count_parameters(plan.expected)
    with tqdm(
        total=total_bytes,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="svd-convert",
        disable=not progress,
        file=sys.stderr,
        leave=False,
    ) as bar:
        with SafetensorsWriter(
            path, entries, metadata={"format": "pt", "producer": "svdeploy"}
        ) as writer:
            for name in names:
                recipe = plan.recipes[name]
                arrays = []
                for key, source_name in recipe.sources:
                    tensor_file = source.files[key]
                    dtypes[tensor_file.infos[source_name].dtype] += 1
                    arrays.append(tensor_file.read_float32(source_name))
                tensor = apply_recipe(recipe, arrays)
                del arrays  # one tensor in memory at a time (q/k/v packing briefly holds two)
                if not np.isfinite(tensor).all():
                    raise CheckpointError(
                        f"{source.path}: tensor "
                        f"{_describe_source(recipe, source)} holds NaN or Inf "
                        "values; expected finite weights (a diverged training run or a damaged "
                        "file?)"
                    )
                writer.write(name, np.ascontiguousarray(tensor, dtype=np.float32))
                bar.update(4 * numel(plan.expected[name]))
    return dtypes


def convert_checkpoint(
    src: Union[str, os.PathLike],
    out_dir: Union[str, os.PathLike],
    config: Union[str, os.PathLike, ModelConfig, None] = None,
    source_format: Optional[SourceFormat] = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Optional[Callable[[str], None]] = None,
) -> ConvertReport:
    """Convert ``src`` into the svdeploy checkpoint directory ``out_dir``.

    ``config``: preset name, YAML path or ModelConfig; required for single-file sources (sgm,
    mindone, torch), optional for diffusers / svdeploy sources (then it must describe the same
    networks; it may change the frame count, video size or sampling defaults).
    ``source_format`` overrides the format detected from the content. ``overwrite`` allows
    replacing an existing non-empty ``out_dir``. ``log`` receives notes such as the removal of
    temporaries a killed earlier run left beside ``out_dir``.
    """
    started = time.perf_counter()
    src, out_dir = Path(src), Path(out_dir)
    _check_destination(src, out_dir, overwrite)
    source = _open_source(src, source_format)
    try:
        cfg, plan = _plan_conversion(source, config)
        return _convert_and_publish(
            source, plan, cfg, src, out_dir, overwrite, progress, log, started
        )
    finally:
        source.close()


def _check_destination(src: Path, out_dir: Path, overwrite: bool) -> None:
    """Refuse an ``out_dir`` that is not replaceable or holds the source, before any work."""
    _check_out_dir(out_dir, overwrite)
    if (
        out_dir.exists()
        and src.exists()
        and (src.resolve() == out_dir.resolve() or out_dir.resolve() in src.resolve().parents)
    ):
        # replacing --out would delete the checkpoint being converted
        raise CheckpointError(
            f"--out {out_dir} contains the source {src}; choose another output directory"
        )
    check_replaceable(out_dir, {"the source": src})


def _plan_conversion(source: _Source, config) -> Tuple[ModelConfig, _Plan]:
    """The model config (given, or detected from the source's tensors) and the plan that
    makes every expected tensor from the source's."""
    if source.files.keys() == {""}:
        candidates, conflicts, ignored = _single_file_candidates(source)
        found = {t: _shape_of(source, r) or () for t, r in candidates.items()}
        cfg, label = _resolve_config(source, config, found)
        return cfg, _plan_single_file(source, cfg, label, candidates, conflicts, ignored)
    cfg, label = _resolve_config(source, config, None)
    return cfg, _plan_diffusers(source, cfg, label)


def _convert_and_publish(
    source: _Source,
    plan: _Plan,
    cfg: ModelConfig,
    src: Path,
    out_dir: Path,
    overwrite: bool,
    progress: bool,
    log: Optional[Callable[[str], None]],
    started: float,
) -> ConvertReport:
    """Write the checkpoint into a hidden folder beside ``out_dir`` and swap it into place; on
    any failure the folder is removed and an earlier output stays as it was."""
    with staged_dir(
        out_dir, CheckpointError, "output", "converting into", str(out_dir), log
    ) as tmp_dir:
        dtypes = _write_weights(source, plan, tmp_dir / WEIGHTS_FILE, progress)
        save_model_config(cfg, tmp_dir / CONFIG_FILE)
        tensors, parameters = _network_counts(plan)
        report = ConvertReport(
            source=src.resolve(),
            source_format=source.source_format,
            container=source.container,
            out_dir=out_dir,
            config=cfg,
            tensors=tensors,
            parameters=parameters,
            ignored=len(plan.ignored),
            ignored_examples=plan.ignored[:20],
            source_dtypes=dict(sorted(dtypes.items())),
            seconds=0.0,
        )
        source.close()
        report.seconds = time.perf_counter() - started
        with open(tmp_dir / PROVENANCE_FILE, "w", encoding="utf-8") as fh:
            json.dump(report.to_json(), fh, indent=2)
            fh.write("\n")
        apply_umask(tmp_dir)
        _move_into_place(tmp_dir, out_dir, overwrite)
    return report


def _network_counts(plan: _Plan) -> Tuple[Dict[str, int], Dict[str, int]]:
    """(tensors, parameters) per network of the planned checkpoint."""
    tensors: Dict[str, int] = {n: 0 for n in NETWORKS}
    parameters: Dict[str, int] = {n: 0 for n in NETWORKS}
    for name, shape in plan.expected.items():
        network = network_of(name)
        assert network is not None
        tensors[network] += 1
        parameters[network] += numel(shape)
    return tensors, parameters
