"""Training checkpoints: svdeploy checkpoint directories plus the state to resume from.

``OUTPUT_DIR/checkpoints/step-00000100/`` holds

    config.yaml            the ModelConfig (svd-convert's format: svd-export takes the folder)
    weights.safetensors    all four networks under Stability's full names, float32: the U-Net
                           as trained, the frozen VAE encoder / decoder and image encoder copied
                           bit for bit from the weights training started from
    optimizer.safetensors  AdamW state: exp_avg.<name>, exp_avg_sq.<name> per trained tensor,
                           and adamw_step
    trainer_state.json     step, samples seen, dataset position, loss scale, the training config

A checkpoint is built in a hidden ``.step-N.partial-PID-…`` folder and renamed into place when every
file is written and synced, so a folder named ``step-N`` is always complete; partial folders
left by a killed run are removed when training starts again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from svdeploy.config import ModelConfig, save_model_config
from svdeploy.errors import CheckpointError
from svdeploy.fsutil import apply_umask, make_temp_dir, remove_quietly, replace_dir
from svdeploy.models.keys import NETWORK_PREFIXES, network_of, sgm_parameter_shapes
from svdeploy.models.loading import CONFIG_FILE, WEIGHTS_FILE
from svdeploy.models.weights_io import SafetensorsFile, SafetensorsWriter

PathLike = Union[str, "os.PathLike[str]"]

CHECKPOINTS_DIR = "checkpoints"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
STATE_FORMAT = "svdeploy-train-state"
STATE_VERSION = 1
_NAME = re.compile(r"^step-(\d{8,})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoints_dir(output_dir: PathLike) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def list_checkpoints(output_dir: PathLike) -> List[Tuple[int, Path]]:
    """Complete checkpoints under ``output_dir``, oldest first, as (step, folder)."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_dir() and (entry / STATE_FILE).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(output_dir: PathLike) -> Optional[Path]:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def remove_partial(output_dir: PathLike) -> List[Path]:
    """Delete the ``.step-N.partial-PID-…`` folders (fsutil's temporary names; ``.step-….partial``
    from earlier versions) a killed run left behind; returns what was removed."""
    root = checkpoints_dir(output_dir)
    removed = []
    if root.is_dir():
        for entry in root.iterdir():
            name = entry.name
            if name.startswith(".step-") and (name.endswith(".partial") or ".partial-" in name):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def prune_checkpoints(output_dir: PathLike, keep: Optional[int]) -> List[Path]:
    """Remove all but the newest ``keep`` checkpoints (None keeps all)."""
    if keep is None:
        return []
    found = list_checkpoints(output_dir)
    doomed = [path for _, path in found[:-keep]] if len(found) > keep else []
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_weights(
    path: Path,
    cfg: ModelConfig,
    unet_params: Iterable[Tuple[str, Any]],
    frozen_source: Path,
    trained_network: str = "unet",
) -> None:
    """weights.safetensors with every tensor of the four networks: ``trained_network`` from
    ``unet_params`` (name relative to the network, MindSpore Parameter), the others copied from
    ``frozen_source`` (a weights.safetensors), one tensor in memory at a time."""
    expected = sgm_parameter_shapes(cfg)
    prefix = NETWORK_PREFIXES[trained_network]
    trained = {prefix + name: param for name, param in unet_params}
    names = sorted(expected)
    with SafetensorsFile(frozen_source) as source:
        missing = [n for n in names if n not in trained and n not in source.infos]
        extra = sorted(set(trained) - set(expected))
        if missing or extra:
            raise CheckpointError(
                f"cannot write {path}: {len(missing)} tensor(s) "
                f"missing from {frozen_source} and the "
                f"trained network ({', '.join(missing[:5])}), {len(extra)} unexpected "
                f"({', '.join(extra[:5])})"
            )
        entries = [(n, expected[n], "F32") for n in names]
        with SafetensorsWriter(
            path, entries, metadata={"format": "pt", "producer": "svd-train"}
        ) as writer:
            for name in names:
                if name in trained:
                    array = trained[name].asnumpy()
                else:
                    if network_of(name) == trained_network:
                        raise CheckpointError(
                            f"{name} belongs to the trained network but is not "
                            "one of its parameters"
                        )
                    array = source.read_float32(name)
                writer.write(name, np.ascontiguousarray(array, dtype=np.float32))


def write_optimizer_state(
    path: Path, names: Sequence[str], exp_avg: Sequence[Any], exp_avg_sq: Sequence[Any], step: Any
) -> None:
    """AdamW state under the trained tensors' full names."""
    entries: List[Tuple[str, Tuple[int, ...], str]] = [("adamw_step", (1,), "F32")]
    for name, m in zip(names, exp_avg):
        entries.append((f"exp_avg.{name}", tuple(m.shape), "F32"))
    for name, v in zip(names, exp_avg_sq):
        entries.append((f"exp_avg_sq.{name}", tuple(v.shape), "F32"))
    with SafetensorsWriter(path, entries, metadata={"producer": "svd-train"}) as writer:
        writer.write("adamw_step", np.asarray(step.asnumpy(), np.float32).reshape(1))
        for name, m in zip(names, exp_avg):
            writer.write(f"exp_avg.{name}", np.ascontiguousarray(m.asnumpy(), np.float32))
        for name, v in zip(names, exp_avg_sq):
            writer.write(f"exp_avg_sq.{name}", np.ascontiguousarray(v.asnumpy(), np.float32))


def load_optimizer_state(
    path: Path, names: Sequence[str], exp_avg: Sequence[Any], exp_avg_sq: Sequence[Any], step: Any
) -> None:
    """Fill AdamW state Parameters from :func:`write_optimizer_state`'s file, strictly."""
    import mindspore as ms

    with SafetensorsFile(path) as source:
        wanted = (
            ["adamw_step"] + [f"exp_avg.{n}" for n in names] + [f"exp_avg_sq.{n}" for n in names]
        )
        missing = [w for w in wanted if w not in source.infos]
        extra = sorted(set(source.infos) - set(wanted))
        if missing or extra:
            raise CheckpointError(
                f"{path} does not match the trained parameters: {len(missing)} missing "
                f"({', '.join(missing[:5])}), {len(extra)} unexpected ({', '.join(extra[:5])}); "
                "was the checkpoint written with another train.temporal_only or model?"
            )
        for kind, params in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
            for name, param in zip(names, params):
                array = source.read_float32(f"{kind}.{name}")
                if tuple(array.shape) != tuple(param.shape):
                    raise CheckpointError(
                        f"{path}: {kind}.{name} has shape {array.shape}, the "
                        f"parameter {tuple(param.shape)}"
                    )
                param.set_data(ms.Tensor(array))
        step.set_data(ms.Tensor(source.read_float32("adamw_step").reshape(1)))


def write_checkpoint(
    output_dir: PathLike,
    step: int,
    cfg: ModelConfig,
    unet_params: Iterable[Tuple[str, Any]],
    frozen_source: Path,
    optimizer_names: Sequence[str],
    optimizer: Any,
    state: Mapping[str, Any],
) -> Path:
    """Write checkpoint ``step`` atomically; returns its folder."""
    root = checkpoints_dir(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = make_temp_dir(final)
    try:
        write_weights(tmp / WEIGHTS_FILE, cfg, unet_params, frozen_source)
        write_optimizer_state(
            tmp / OPTIMIZER_FILE,
            optimizer_names,
            optimizer.exp_avg,
            optimizer.exp_avg_sq,
            optimizer.step,
        )
        save_model_config(cfg, tmp / CONFIG_FILE)
        _write_json(tmp / STATE_FILE, {"format": STATE_FORMAT, "version": STATE_VERSION, **state})
        apply_umask(tmp)
        _fsync_dir(tmp)
        # replaces a checkpoint of the same step from an earlier, abandoned run
        replace_dir(tmp, final)
        _fsync_dir(root)
    except BaseException:
        remove_quietly(tmp)
        raise
    return final


def read_state(checkpoint: PathLike) -> Dict[str, Any]:
    path = Path(checkpoint) / STATE_FILE
    try:
        with open(path, "r", encoding="utf-8") as fh:
            state = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable training state ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"{path}: not an svd-train state file (format {state.get('format')!r})"
            if isinstance(state, dict)
            else f"{path}: not an svd-train state file"
        )
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(
            f"{path}: state version {state.get('version')!r}; this svdeploy "
            f"reads version {STATE_VERSION}"
        )
    return state


def write_float32_checkpoint(
    folder: Path, cfg: ModelConfig, tensors: Mapping[str, np.ndarray], producer: str
) -> None:
    """``folder``/weights.safetensors (every tensor float32, sorted by name) and config.yaml:
    the checkpoint-directory files the random initialisation and the autoencoder stage write."""
    names = sorted(tensors)
    with SafetensorsWriter(
        folder / WEIGHTS_FILE,
        [(n, tensors[n].shape, "F32") for n in names],
        metadata={"format": "pt", "producer": producer},
    ) as w:
        for name in names:
            w.write(name, tensors[name])
    save_model_config(cfg, folder / CONFIG_FILE)
