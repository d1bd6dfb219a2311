"""Checking a ``POST /v1/videos`` request before it becomes a job: form fields, their types and
ranges, the output format, the image. Everything a replica would refuse is refused here, with
the field named, so bad input never reaches a replica.

Ranges and defaults are the runtime's own (``resolve_sampling_params``, as ``svd-run`` uses), so
a job and ``svd-run`` with the same values and seed give the same frames. Pure Python: no Ray.
"""

from __future__ import annotations

import math
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

from svdeploy.errors import InputError
from svdeploy.manifest import Manifest
from svdeploy.runtime import load_image, resolve_sampling_params

from .jobs import CONTENT_TYPES

FORMATS = tuple(CONTENT_TYPES)
DEFAULT_FORMAT = "mp4"
# form field → runtime keyword (the form uses the svd-run option names)
SAMPLING_FIELDS = {
    "steps": "num_inference_steps",
    "fps": "fps",
    "motion_bucket_id": "motion_bucket_id",
    "noise_aug_strength": "noise_aug_strength",
    "min_guidance_scale": "min_guidance_scale",
    "max_guidance_scale": "max_guidance_scale",
}
INTEGER_FIELDS = ("seed", "steps", "fps", "motion_bucket_id")
FIELDS = ("image", "seed", "format") + tuple(SAMPLING_FIELDS)
SEED_LIMIT = 2**63  # numpy's default_rng takes any non-negative integer; JSON clients do not


class RequestError(InputError):
    """A request refused before it became a job: HTTP status, a stable code, the field."""

    def __init__(self, status: int, code: str, message: str, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.status, self.code, self.field = status, code, field

    def to_json(self) -> Dict[str, Any]:
        return {"error": {"code": self.code, "message": str(self), "field": self.field}}


@dataclass(frozen=True)
class JobRequest:
    """The resolved parameters of one job: what the replica runs, and what the record shows."""

    seed: int
    format: str
    fps: int
    motion_bucket_id: int
    noise_aug_strength: float
    min_guidance_scale: float
    max_guidance_scale: float
    num_inference_steps: int

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    def sampling(self) -> Dict[str, Any]:
        """The keyword arguments of ``VideoPipeline.generate``."""
        data = asdict(self)
        del data["seed"], data["format"]
        return data


def _parse_integer(field: str, text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise RequestError(
            422, "invalid_type", f"{field} = {text!r}: expected an integer", field
        ) from None


def _parse_number(field: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise RequestError(
            422, "invalid_type", f"{field} = {text!r}: expected a number", field
        ) from None
    if not math.isfinite(value):
        raise RequestError(
            422, "invalid_value", f"{field} = {text!r}: expected a finite number", field
        )
    return value


def _parse_seed(text: Optional[str]) -> int:
    if text is None:
        return secrets.randbits(32)  # drawn here, so the record (and a re-run) has it
    seed = _parse_integer("seed", text)
    if not 0 <= seed < SEED_LIMIT:
        raise RequestError(
            422,
            "invalid_value",
            f"seed = {seed}: expected an integer in 0..{SEED_LIMIT - 1}",
            "seed",
        )
    return seed


def _parse_format(text: Optional[str]) -> str:
    fmt = DEFAULT_FORMAT if text is None else text.strip().lower()
    if fmt not in FORMATS:
        raise RequestError(
            422,
            "invalid_value",
            f"format = {text!r}: expected one of {', '.join(FORMATS)}",
            "format",
        )
    return fmt


def parse_fields(manifest: Manifest, fields: Mapping[str, str]) -> JobRequest:
    """Form text fields (everything but ``image``) → a JobRequest with every default filled.

    Each sampling field is first checked alone, so an error names the field it is about; then
    together (min ≤ max guidance, guidance without CFG)."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise RequestError(
            400,
            "unknown_field",
            f"unknown form field {unknown[0]!r}; expected {', '.join(FIELDS)}",
            unknown[0],
        )
    given: Dict[str, Any] = {}
    for field, keyword in SAMPLING_FIELDS.items():
        if fields.get(field) is None:
            continue
        parse: Callable[[str, str], Any] = (
            _parse_integer if field in INTEGER_FIELDS else _parse_number
        )
        value = parse(field, fields[field])
        try:
            resolve_sampling_params(manifest, **{keyword: value})
        except InputError as exc:
            raise RequestError(422, "invalid_value", _form_names(str(exc)), field) from None
        given[keyword] = value
    try:
        params = resolve_sampling_params(manifest, **given)
    except InputError as exc:
        field = next((f for f, k in SAMPLING_FIELDS.items() if str(exc).startswith(k)), None)
        raise RequestError(422, "invalid_value", _form_names(str(exc)), field) from None
    resolved = asdict(params)
    resolved.pop("guidance")
    return JobRequest(
        seed=_parse_seed(fields.get("seed")), format=_parse_format(fields.get("format")), **resolved
    )


def _form_names(message: str) -> str:
    """The runtime says num_inference_steps; the form field is steps."""
    return message.replace("num_inference_steps", "steps")


def check_image(data: bytes) -> Dict[str, Any]:
    """Decode the upload fully with the runtime's loader (the one svd-run uses); refuse what
    it refuses. Returns the image's size and mode."""
    if not data:
        raise RequestError(422, "invalid_image", "image is empty: expected an image file", "image")
    fd, name = tempfile.mkstemp(prefix=".upload-", suffix=".img")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        image = load_image(Path(name))
    except InputError as exc:
        # the runtime names the temporary path; the client knows it as the field image
        message = str(exc).replace(f"image {name!r}", "the uploaded image")
        raise RequestError(422, "invalid_image", message, "image") from None
    finally:
        os.unlink(name)
    return {"width": image.width, "height": image.height, "mode": image.mode}


__all__ = [
    "RequestError",
    "JobRequest",
    "parse_fields",
    "check_image",
    "FIELDS",
    "FORMATS",
    "DEFAULT_FORMAT",
    "SAMPLING_FIELDS",
]
