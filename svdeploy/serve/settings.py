"""The settings of one ``svd-serve`` deployment, checked before Ray starts. Pure Python."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from svdeploy.errors import BackendError, InputError
from svdeploy.manifest import Manifest, read_manifest
from svdeploy.runtime import PRECISIONS, choose_backend, resolve_precision

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b?)\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_BYTES = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_duration(text: str) -> float:
    """'90', '90s', '30m', '24h', '7d' → seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise InputError(
            f"duration {text!r}: expected a number with an optional unit s, m, h or d (e.g. 24h)"
        )
    return float(match.group(1)) * _SECONDS[match.group(2)]


def parse_size(text: str) -> int:
    """'20MB', '512KiB', '1000000' → bytes (k/M/G are powers of 1000, KiB/MiB/GiB of 1024)."""
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _BYTES:
        raise InputError(
            f"size {text!r}: expected a number of bytes with an optional unit KB, "
            "MB, GB, KiB, MiB or GiB (e.g. 20MB)"
        )
    return int(float(match.group(1)) * _BYTES[unit])


@dataclass(frozen=True)
class ServeSettings:
    artifact: str  # absolute path, the same on every node of a cluster
    backend: str  # resolved: what the replicas load
    jobs_dir: str  # absolute path on the node that runs the API replica
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0
    precision: Optional[str] = None
    lite_python: Optional[str] = None  # interpreter with mindspore_lite (the lite backend's worker)
    address: Optional[str] = None  # None: start a local Ray
    max_queue: int = 16
    max_upload: int = 20 * 1000**2
    keep_seconds: float = 24 * 3600.0
    verify_hashes: bool = True

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "ServeSettings":
        return cls(**data)


def resolve_settings(
    artifact: Path,
    jobs_dir: Path,
    backend: Optional[str] = None,
    precision: Optional[str] = None,
    lite_python: Optional[str] = None,
    **options: Any,
) -> ServeSettings:
    """Check the artifact (manifest only: the replicas verify the hashes when they load it),
    the backend and the precision, and every numeric option; errors name the option."""
    manifest = read_manifest(artifact, verify_hashes=False, formats=[])
    chosen = choose_backend(manifest, backend, lite_python=lite_python)
    if chosen == "lite":
        lite_python = lite_interpreter(lite_python)
    if precision is not None:
        precision = check_precision(manifest, chosen, precision)
    for name, low in (("replicas", 1), ("max_queue", 1), ("max_upload", 1)):
        if options.get(name) is not None and options[name] < low:
            raise InputError(f"--{name.replace('_', '-')} {options[name]}: expected ≥ {low}")
    for name in ("replica_cpus", "replica_gpus", "keep_seconds"):
        if options.get(name) is not None and options[name] < 0:
            raise InputError(f"--{name.replace('_', '-')} {options[name]}: expected ≥ 0")
    port = options.get("port")
    if port is not None and not 1 <= port <= 65535:
        raise InputError(f"--port {port}: expected 1..65535")
    given = {k: v for k, v in options.items() if v is not None}
    return ServeSettings(
        artifact=str(Path(artifact).resolve()),
        backend=chosen,
        jobs_dir=str(Path(jobs_dir).resolve()),
        precision=precision,
        lite_python=lite_python,
        **given,
    )


def lite_interpreter(explicit: Optional[str]) -> Optional[str]:
    """The interpreter the lite replicas will use, resolved here (the option, else
    SVDEPLOY_LITE_PYTHON) so that replicas on other nodes get the same path; None when
    mindspore_lite imports in this Python. Neither: refused before Ray starts."""
    from svdeploy.runtime import lite_importable, resolve_lite_python

    named = resolve_lite_python(explicit)
    if named is None and not lite_importable():
        raise BackendError(
            "backend 'lite': mindspore_lite does not import in this Python and no "
            "interpreter is named; pass --lite-python PYTHON (one with "
            "mindspore_lite installed) or set SVDEPLOY_LITE_PYTHON"
        )
    return named


def check_precision(manifest: Manifest, backend: str, precision: str) -> str:
    """The precision the replicas will compute in, as ``svd-run --precision`` resolves it
    (``fp32``, ``bf16`` or ``auto``; see ``runtime.backends.resolve_precision``): a backend
    that cannot give it is refused here, before Ray starts, not in every replica."""
    return resolve_precision(backend, manifest, precision)


__all__ = [
    "ServeSettings",
    "resolve_settings",
    "check_precision",
    "parse_duration",
    "parse_size",
    "PRECISIONS",
]
