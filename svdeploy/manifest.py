"""The artifact manifest: the single contract between ``svd-export`` and ``svd-run``.

An artifact directory holds ``manifest.json`` and one file per exported graph. The runtime
trusts nothing else: sizes, frame count, guidance batching, decode chunking, scheduler
constants, and per graph the file, format, input/output specs, sha256 and the parity error
measured at export. Pure Python (json, hashlib): importable without MindSpore.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .contract import (
    GRAPH_FORMATS,
    GRAPH_NAMES,
    REQUIRED_GRAPHS,  # noqa: F401  (re-exported: manifest.REQUIRED_GRAPHS)
    required_graphs,
)
from .errors import ManifestError
from .fsutil import atomic_write_text, json_text

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
DTYPES = ("float32", "float16", "bfloat16", "int32", "int64", "uint8")
# GRAPH_FORMATS, GRAPH_NAMES and REQUIRED_GRAPHS: svdeploy.contract (re-exported here)
# Bounds on what a manifest may make us read: its own size and its JSON nesting (the exporter
# writes ~10 KB and depth 5; a hostile file must not exhaust memory or the recursion limit).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 32


# ---------------------------------------------------------------------------------------------
# Typed fields: a manifest is data from disk, so every value is checked, never coerced
# ---------------------------------------------------------------------------------------------
def _int_field(value: Any, where: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ManifestError(f"{where} = {value!r}: expected an integer ≥ {low}")
    return value


def _bool_field(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ManifestError(f"{where} = {value!r}: expected true or false")
    return value


def _str_field(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ManifestError(f"{where} = {value!r}: expected a string")
    return value


def _dict_field(value: Any, where: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ManifestError(f"{where} = {value!r}: expected an object")
    return dict(value)


def _float_field(
    value: Any, where: str, positive: bool = True, optional: bool = False
) -> Optional[float]:
    if value is None and optional:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (positive and value <= 0)
        or (not positive and value < 0)
    ):
        raise ManifestError(
            f"{where} = {value!r}: expected a finite number "
            f"{'> 0' if positive else '≥ 0'}{' or null' if optional else ''}"
        )
    return float(value)


def _relative_name(value: Any, where: str) -> str:
    """A file name inside the artifact: relative, without '..' (symlinks are checked when the
    file is opened, by ``artifact_file``)."""
    name = _str_field(value, where)
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ManifestError(
            f"{where} = {name!r}: expected a plain relative name inside the artifact"
        )
    return name


def _external_files(value: Any, where: str) -> List[Dict[str, str]]:
    if not isinstance(value, list):
        raise ManifestError(f"{where} = {value!r}: expected a list of {{file, sha256}} objects")
    files = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"file", "sha256"}:
            raise ManifestError(
                f"{where}[{i}] = {item!r}: expected an object with exactly 'file' and 'sha256'"
            )
        files.append(
            {
                "file": _relative_name(item["file"], f"{where}[{i}].file"),
                "sha256": _str_field(item["sha256"], f"{where}[{i}].sha256"),
            }
        )
    return files


def _list_field(value: Any, where: str) -> List[Any]:
    if not isinstance(value, list):
        raise ManifestError(f"{where} = {value!r}: expected a list")
    return value


def json_depth(data: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return deepest


@dataclass
class TensorSpec:
    name: str
    shape: Tuple[int, ...]
    dtype: str = "float32"

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "TensorSpec":
        if (
            not isinstance(data, dict)
            or "name" not in data
            or not isinstance(data.get("shape"), list)
        ):
            raise ManifestError(
                f"{where}: malformed tensor spec {data!r}: expected an object with "
                "name, shape (a list) and dtype"
            )
        spec = cls(
            name=_str_field(data["name"], f"{where}.name"),
            shape=tuple(_int_field(d, f"{where}.shape") for d in data["shape"]),
            dtype=_str_field(data.get("dtype", "float32"), f"{where}.dtype"),
        )
        if spec.dtype not in DTYPES:
            raise ManifestError(f"{where}: dtype {spec.dtype!r} is not one of {', '.join(DTYPES)}")
        if any(d < 1 for d in spec.shape):
            raise ManifestError(f"{where}: shape {list(spec.shape)} must be static and positive")
        return spec


@dataclass
class GraphEntry:
    """One exported graph file."""

    name: str  # one of GRAPH_NAMES
    format: str  # mindir | onnx
    file: str  # relative to the artifact directory
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    sha256: str
    parity_max_rel_error: Optional[float] = None
    parity_tolerance: Optional[float] = None
    export_seconds: Optional[float] = None
    dtype: str = "fp32"  # compute precision of the graph's matmul/conv work
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "file": self.file,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "sha256": self.sha256,
            "parity_max_rel_error": self.parity_max_rel_error,
            "parity_tolerance": self.parity_tolerance,
            "export_seconds": self.export_seconds,
            "dtype": self.dtype,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> "GraphEntry":
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected an object, got {data!r}")
        try:
            entry = cls(
                name=_str_field(data["name"], f"{where}.name"),
                format=_str_field(data["format"], f"{where}.format"),
                file=_relative_name(data["file"], f"{where}.file"),
                inputs=[
                    TensorSpec.from_json(t, f"{where}.inputs")
                    for t in _list_field(data["inputs"], f"{where}.inputs")
                ],
                outputs=[
                    TensorSpec.from_json(t, f"{where}.outputs")
                    for t in _list_field(data["outputs"], f"{where}.outputs")
                ],
                sha256=_str_field(data["sha256"], f"{where}.sha256"),
                parity_max_rel_error=_float_field(
                    data.get("parity_max_rel_error"), f"{where}.parity_max_rel_error", False, True
                ),
                parity_tolerance=_float_field(
                    data.get("parity_tolerance"), f"{where}.parity_tolerance", False, True
                ),
                export_seconds=_float_field(
                    data.get("export_seconds"), f"{where}.export_seconds", False, True
                ),
                dtype=_str_field(data.get("dtype", "fp32"), f"{where}.dtype"),
                extra=_dict_field(data.get("extra"), f"{where}.extra"),
            )
        except KeyError as exc:
            raise ManifestError(f"{where}: missing field {exc.args[0]!r}") from None
        if "external_files" in entry.extra:
            entry.extra["external_files"] = _external_files(
                entry.extra["external_files"], f"{where}.extra.external_files"
            )
        if entry.name not in GRAPH_NAMES:
            raise ManifestError(
                f"{where}: unknown graph name {entry.name!r}; expected one of "
                f"{', '.join(GRAPH_NAMES)}"
            )
        if entry.format not in GRAPH_FORMATS:
            raise ManifestError(
                f"{where}: unknown format {entry.format!r}; expected one of "
                f"{', '.join(GRAPH_FORMATS)}"
            )
        return entry


@dataclass
class Manifest:
    variant: str
    height: int
    width: int
    num_frames: int
    latent_shape: Tuple[int, ...]  # (F, C, h, w)
    cfg: bool
    guidance_batch: int  # 2 with CFG ([uncond, cond]), 1 without
    decode_chunk_size: int
    scheduler: Dict[str, float]  # sigma_min, sigma_max, rho, scaling_factor
    defaults: Dict[str, Any]  # sampling defaults of the preset
    graphs: List[GraphEntry]
    dtype: str = "fp32"
    target: str = "cpu"
    toolkit_version: str = ""
    format_version: int = FORMAT_VERSION
    extra: Dict[str, Any] = field(default_factory=dict)

    # -- queries --------------------------------------------------------------------------
    def formats(self) -> List[str]:
        return sorted({g.format for g in self.graphs})

    def graph(self, name: str, fmt: str) -> GraphEntry:
        for g in self.graphs:
            if g.name == name and g.format == fmt:
                return g
        raise ManifestError(
            f"artifact has no {fmt} graph {name!r}; it holds: "
            + ", ".join(f"{g.name}.{g.format}" for g in self.graphs)
        )

    def has_graph(self, name: str, fmt: str) -> bool:
        return any(g.name == name and g.format == fmt for g in self.graphs)

    # -- (de)serialisation -------------------------------------------------------------------
    def to_json(self) -> Dict[str, Any]:
        return {
            "format_version": self.format_version,
            "toolkit_version": self.toolkit_version,
            "variant": self.variant,
            "height": self.height,
            "width": self.width,
            "num_frames": self.num_frames,
            "latent_shape": list(self.latent_shape),
            "cfg": self.cfg,
            "guidance_batch": self.guidance_batch,
            "decode_chunk_size": self.decode_chunk_size,
            "dtype": self.dtype,
            "target": self.target,
            "scheduler": dict(self.scheduler),
            "defaults": dict(self.defaults),
            "graphs": [g.to_json() for g in self.graphs],
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = MANIFEST_NAME) -> "Manifest":
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a JSON object")
        version = data.get("format_version")
        if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
            raise ManifestError(
                f"{where}: format_version {version!r} is not supported by this "
                f"svdeploy (supported: {', '.join(map(str, SUPPORTED_VERSIONS))})"
            )
        try:
            m = cls(
                format_version=int(version),
                toolkit_version=_str_field(
                    data.get("toolkit_version", ""), f"{where}.toolkit_version"
                ),
                variant=_str_field(data["variant"], f"{where}.variant"),
                height=_int_field(data["height"], f"{where}.height"),
                width=_int_field(data["width"], f"{where}.width"),
                num_frames=_int_field(data["num_frames"], f"{where}.num_frames"),
                latent_shape=tuple(
                    _int_field(d, f"{where}.latent_shape")
                    for d in _list_field(data["latent_shape"], f"{where}.latent_shape")
                ),
                cfg=_bool_field(data["cfg"], f"{where}.cfg"),
                guidance_batch=_int_field(data["guidance_batch"], f"{where}.guidance_batch"),
                decode_chunk_size=_int_field(
                    data["decode_chunk_size"], f"{where}.decode_chunk_size"
                ),
                dtype=_str_field(data.get("dtype", "fp32"), f"{where}.dtype"),
                target=_str_field(data.get("target", "cpu"), f"{where}.target"),
                scheduler={
                    k: _float_field(v, f"{where}.scheduler.{k}")  # type: ignore[misc]
                    for k, v in _dict_field(data["scheduler"], f"{where}.scheduler").items()
                },
                defaults=_dict_field(data.get("defaults"), f"{where}.defaults"),
                graphs=[
                    GraphEntry.from_json(g, f"{where}.graphs[{i}]")
                    for i, g in enumerate(_list_field(data["graphs"], f"{where}.graphs"))
                ],
                extra=_dict_field(data.get("extra"), f"{where}.extra"),
            )
        except KeyError as exc:
            raise ManifestError(f"{where}: missing field {exc.args[0]!r}") from None
        if "partial" in m.extra:
            _bool_field(m.extra["partial"], f"{where}.extra.partial")
        m.validate(where)
        return m

    def validate(self, where: str = MANIFEST_NAME) -> None:
        for key in ("sigma_min", "sigma_max", "rho", "scaling_factor"):
            if key not in self.scheduler:
                raise ManifestError(f"{where}: scheduler.{key} is missing")
            _float_field(self.scheduler[key], f"{where}: scheduler.{key}")
        if not self.scheduler["sigma_min"] < self.scheduler["sigma_max"]:
            raise ManifestError(
                f"{where}: scheduler sigma_min {self.scheduler['sigma_min']} must be "
                f"below sigma_max {self.scheduler['sigma_max']}"
            )
        if self.guidance_batch != (2 if self.cfg else 1):
            raise ManifestError(
                f"{where}: guidance_batch {self.guidance_batch} does not match "
                f"cfg={self.cfg} (expected {2 if self.cfg else 1})"
            )
        if len(self.latent_shape) != 4 or self.latent_shape[0] != self.num_frames:
            raise ManifestError(
                f"{where}: latent_shape {list(self.latent_shape)} must be "
                f"(num_frames={self.num_frames}, C, h, w)"
            )
        if not 1 <= self.decode_chunk_size <= self.num_frames:
            raise ManifestError(
                f"{where}: decode_chunk_size {self.decode_chunk_size} must be in "
                f"1..{self.num_frames}"
            )
        seen = set()
        for g in self.graphs:
            graph_key = (g.name, g.format)
            if graph_key in seen:
                raise ManifestError(f"{where}: graph {g.name}.{g.format} is listed twice")
            seen.add(graph_key)
        for fmt in self.formats() if not self.extra.get("partial") else ():
            missing = [
                n
                for n in required_graphs(self.num_frames, self.decode_chunk_size)
                if (n, fmt) not in seen
            ]
            if missing:
                raise ManifestError(f"{where}: the {fmt} graphs {', '.join(missing)} are missing")
        if not self.graphs:
            raise ManifestError(f"{where}: lists no graphs")


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def sha256_file(path: Union[str, os.PathLike], chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def write_manifest(manifest: Manifest, directory: Union[str, os.PathLike]) -> Path:
    """Write ``manifest.json`` atomically (temporary name, then rename)."""
    manifest.validate()
    return atomic_write_text(Path(directory) / MANIFEST_NAME, json_text(manifest.to_json()))


def artifact_file(directory: Path, name: str, what: str) -> Path:
    """``directory / name`` after checking that it stays inside the artifact once symlinks are
    resolved and that it is a regular file (a device such as /dev/zero would never end)."""
    base = directory.resolve()
    path = (directory / name).resolve()
    if path != base and base not in path.parents:
        raise ManifestError(
            f"artifact {str(directory)!r}: {what} {name!r} resolves to "
            f"{str(path)!r}, outside the artifact; expected a file inside it"
        )
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ManifestError(f"artifact {str(directory)!r}: {what} {name!r} is missing") from None
    except OSError as exc:
        raise ManifestError(
            f"artifact {str(directory)!r}: {what} {name!r} cannot be read ({exc.strerror})"
        ) from None
    if not stat.S_ISREG(mode):
        raise ManifestError(f"artifact {str(directory)!r}: {what} {name!r} is not a regular file")
    return path


def _load_manifest_json(directory: Path) -> Any:
    path = directory / MANIFEST_NAME
    if not path.exists() and not path.is_symlink():
        raise ManifestError(
            f"{str(directory)!r} is not an svdeploy artifact: {MANIFEST_NAME} is "
            "missing (export one with svd-export)"
        )
    path = artifact_file(directory, MANIFEST_NAME, "manifest")
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{str(path)!r} has {size} bytes; a manifest is expected to be "
            f"under {MAX_MANIFEST_BYTES} bytes"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{str(path)!r} is not valid JSON: {exc}") from None
    except RecursionError:
        data = None
    if data is None or json_depth(data) > MAX_JSON_DEPTH:
        raise ManifestError(
            f"{str(path)!r} nests JSON deeper than {MAX_JSON_DEPTH} levels; "
            "expected a manifest written by svd-export"
        )
    return data


def require_complete(manifest: Manifest, directory: Union[str, os.PathLike]) -> None:
    """Refuse an artifact exported with --graph (a subset of the networks) before running it."""
    if manifest.extra.get("partial"):
        present = sorted({g.name for g in manifest.graphs})
        raise ManifestError(
            f"artifact {str(directory)!r} is partial (exported with --graph, it "
            f"holds only {', '.join(present)}); svd-run needs a full export "
            "without --graph"
        )


def read_manifest(
    directory: Union[str, os.PathLike],
    verify_hashes: bool = True,
    formats: Optional[Sequence[str]] = None,
) -> Manifest:
    """Load and check an artifact directory's manifest.

    Refuses a missing directory or manifest, an unknown format version, a missing graph file,
    any file named by the manifest that lies outside the artifact or is not a regular file,
    and (with ``verify_hashes``) any graph or external weight file whose sha256 differs from
    the manifest. ``formats`` limits the file checks to the graphs a backend will load.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ManifestError(f"artifact {str(directory)!r} is not a directory")
    manifest = Manifest.from_json(_load_manifest_json(directory), str(directory / MANIFEST_NAME))
    for g in manifest.graphs:
        if formats is not None and g.format not in formats:
            continue
        file = artifact_file(directory, g.file, f"graph file ({g.name}, {g.format})")
        externals = [
            (artifact_file(directory, e["file"], f"external weight file of {g.file!r}"), e)
            for e in g.extra.get("external_files", [])
        ]
        if not verify_hashes:
            continue
        actual = sha256_file(file)
        if actual != g.sha256:
            raise ManifestError(
                f"artifact {str(directory)!r}: {g.file!r} has sha256 {actual[:16]}…, the "
                f"manifest records {g.sha256[:16]}…: the file was modified or damaged"
            )
        for path, ext in externals:
            if sha256_file(path) != ext["sha256"]:
                raise ManifestError(
                    f"artifact {str(directory)!r}: external weight file "
                    f"{ext['file']!r} of {g.file!r} does not match its sha256"
                )
    return manifest
