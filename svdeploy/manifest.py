"""The artifact manifest: the single contract between ``svd-export`` and ``svd-run``.

An artifact directory holds ``manifest.json`` and one file per exported graph. The runtime
trusts nothing else: sizes, frame count, guidance batching, decode chunking, scheduler
constants, and per graph the file, format, input/output specs, sha256 and the parity error
measured at export. Pure Python (json, hashlib): importable without MindSpore.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .errors import ManifestError
from .fsutil import apply_umask

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
# lite: a MindIR converted by MindSpore Lite's converter (loadable by Lite only)
GRAPH_FORMATS = ("mindir", "onnx", "lite")
DTYPES = ("float32", "float16", "bfloat16", "int32", "int64", "uint8")
# The graphs an artifact holds. vae_decoder_tail exists only when frames % chunk != 0.
GRAPH_NAMES = ("image_encoder", "vae_encoder", "unet", "vae_decoder", "vae_decoder_tail")
REQUIRED_GRAPHS = ("image_encoder", "vae_encoder", "unet", "vae_decoder")


@dataclass
class TensorSpec:
    name: str
    shape: Tuple[int, ...]
    dtype: str = "float32"

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "TensorSpec":
        try:
            spec = cls(name=str(data["name"]), shape=tuple(int(d) for d in data["shape"]),
                       dtype=str(data.get("dtype", "float32")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: malformed tensor spec {data!r} ({exc})") from None
        if spec.dtype not in DTYPES:
            raise ManifestError(f"{where}: dtype {spec.dtype!r} is not one of {', '.join(DTYPES)}")
        if any(d < 1 for d in spec.shape):
            raise ManifestError(f"{where}: shape {list(spec.shape)} must be static and positive")
        return spec


@dataclass
class GraphEntry:
    """One exported graph file."""

    name: str                 # one of GRAPH_NAMES
    format: str               # mindir | onnx
    file: str                 # relative to the artifact directory
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    sha256: str
    parity_max_rel_error: Optional[float] = None
    parity_tolerance: Optional[float] = None
    export_seconds: Optional[float] = None
    dtype: str = "fp32"       # compute precision of the graph's matmul/conv work
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return {
            "name": self.name, "format": self.format, "file": self.file,
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
                name=str(data["name"]), format=str(data["format"]), file=str(data["file"]),
                inputs=[TensorSpec.from_json(t, f"{where}.inputs") for t in data["inputs"]],
                outputs=[TensorSpec.from_json(t, f"{where}.outputs") for t in data["outputs"]],
                sha256=str(data["sha256"]),
                parity_max_rel_error=data.get("parity_max_rel_error"),
                parity_tolerance=data.get("parity_tolerance"),
                export_seconds=data.get("export_seconds"),
                dtype=str(data.get("dtype", "fp32")),
                extra=dict(data.get("extra") or {}),
            )
        except KeyError as exc:
            raise ManifestError(f"{where}: missing field {exc.args[0]!r}") from None
        if entry.name not in GRAPH_NAMES:
            raise ManifestError(f"{where}: unknown graph name {entry.name!r}; expected one of "
                                f"{', '.join(GRAPH_NAMES)}")
        if entry.format not in GRAPH_FORMATS:
            raise ManifestError(f"{where}: unknown format {entry.format!r}; expected one of "
                                f"{', '.join(GRAPH_FORMATS)}")
        if Path(entry.file).is_absolute() or ".." in Path(entry.file).parts:
            raise ManifestError(f"{where}: file {entry.file!r} must be a plain relative name")
        return entry


@dataclass
class Manifest:
    variant: str
    height: int
    width: int
    num_frames: int
    latent_shape: Tuple[int, ...]          # (F, C, h, w)
    cfg: bool
    guidance_batch: int                    # 2 with CFG ([uncond, cond]), 1 without
    decode_chunk_size: int
    scheduler: Dict[str, float]            # sigma_min, sigma_max, rho, scaling_factor
    defaults: Dict[str, Any]               # sampling defaults of the preset
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
        raise ManifestError(f"artifact has no {fmt} graph {name!r}; it holds: "
                            + ", ".join(f"{g.name}.{g.format}" for g in self.graphs))

    def has_graph(self, name: str, fmt: str) -> bool:
        return any(g.name == name and g.format == fmt for g in self.graphs)

    # -- (de)serialisation -------------------------------------------------------------------
    def to_json(self) -> Dict[str, Any]:
        return {
            "format_version": self.format_version,
            "toolkit_version": self.toolkit_version,
            "variant": self.variant,
            "height": self.height, "width": self.width, "num_frames": self.num_frames,
            "latent_shape": list(self.latent_shape),
            "cfg": self.cfg, "guidance_batch": self.guidance_batch,
            "decode_chunk_size": self.decode_chunk_size,
            "dtype": self.dtype, "target": self.target,
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
        if version not in SUPPORTED_VERSIONS:
            raise ManifestError(f"{where}: format_version {version!r} is not supported by this "
                                f"svdeploy (supported: {', '.join(map(str, SUPPORTED_VERSIONS))})")
        try:
            m = cls(
                format_version=int(version),
                toolkit_version=str(data.get("toolkit_version", "")),
                variant=str(data["variant"]),
                height=int(data["height"]), width=int(data["width"]),
                num_frames=int(data["num_frames"]),
                latent_shape=tuple(int(d) for d in data["latent_shape"]),
                cfg=bool(data["cfg"]), guidance_batch=int(data["guidance_batch"]),
                decode_chunk_size=int(data["decode_chunk_size"]),
                dtype=str(data.get("dtype", "fp32")), target=str(data.get("target", "cpu")),
                scheduler={k: float(v) for k, v in dict(data["scheduler"]).items()},
                defaults=dict(data.get("defaults") or {}),
                graphs=[GraphEntry.from_json(g, f"{where}.graphs[{i}]")
                        for i, g in enumerate(data["graphs"])],
                extra=dict(data.get("extra") or {}),
            )
        except KeyError as exc:
            raise ManifestError(f"{where}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: malformed field ({exc})") from None
        m.validate(where)
        return m

    def validate(self, where: str = MANIFEST_NAME) -> None:
        for key in ("sigma_min", "sigma_max", "rho", "scaling_factor"):
            if key not in self.scheduler:
                raise ManifestError(f"{where}: scheduler.{key} is missing")
        if self.guidance_batch != (2 if self.cfg else 1):
            raise ManifestError(f"{where}: guidance_batch {self.guidance_batch} does not match "
                                f"cfg={self.cfg} (expected {2 if self.cfg else 1})")
        if len(self.latent_shape) != 4 or self.latent_shape[0] != self.num_frames:
            raise ManifestError(f"{where}: latent_shape {list(self.latent_shape)} must be "
                                f"(num_frames={self.num_frames}, C, h, w)")
        if not 1 <= self.decode_chunk_size <= self.num_frames:
            raise ManifestError(f"{where}: decode_chunk_size {self.decode_chunk_size} must be in "
                                f"1..{self.num_frames}")
        seen = set()
        for g in self.graphs:
            key = (g.name, g.format)
            if key in seen:
                raise ManifestError(f"{where}: graph {g.name}.{g.format} is listed twice")
            seen.add(key)
        for fmt in self.formats() if not self.extra.get("partial") else ():
            missing = [n for n in REQUIRED_GRAPHS if (n, fmt) not in seen]
            if self.num_frames % self.decode_chunk_size and ("vae_decoder_tail", fmt) not in seen:
                missing.append("vae_decoder_tail")
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
    directory = Path(directory)
    target = directory / MANIFEST_NAME
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(manifest.to_json(), fh, indent=2)
            fh.write("\n")
        apply_umask(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def read_manifest(directory: Union[str, os.PathLike], verify_hashes: bool = True,
                  formats: Optional[Sequence[str]] = None) -> Manifest:
    """Load and check an artifact directory's manifest.

    Refuses a missing directory or manifest, an unknown format version, a missing graph file,
    and (with ``verify_hashes``) any graph file whose sha256 differs from the manifest.
    ``formats`` limits the hash check to the graphs a backend will load.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ManifestError(f"artifact {str(directory)!r} is not a directory")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{str(directory)!r} is not an svdeploy artifact: {MANIFEST_NAME} is "
                            "missing (export one with svd-export)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{str(path)!r} is not valid JSON: {exc}") from None
    manifest = Manifest.from_json(data, str(path))
    for g in manifest.graphs:
        if formats is not None and g.format not in formats:
            continue
        file = directory / g.file
        if not file.is_file():
            raise ManifestError(f"artifact {str(directory)!r}: graph file {g.file!r} ({g.name}, "
                                f"{g.format}) is missing")
        if verify_hashes:
            actual = sha256_file(file)
            if actual != g.sha256:
                raise ManifestError(
                    f"artifact {str(directory)!r}: {g.file!r} has sha256 {actual[:16]}…, the "
                    f"manifest records {g.sha256[:16]}…: the file was modified or damaged")
            for ext_file in g.extra.get("external_files", []):
                name, digest = ext_file["file"], ext_file["sha256"]
                if sha256_file(directory / name) != digest:
                    raise ManifestError(f"artifact {str(directory)!r}: external weight file "
                                        f"{name!r} of {g.file!r} does not match its sha256")
    return manifest
