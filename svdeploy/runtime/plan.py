"""Memory plan of a run, before the run: predicted peak resident memory of each stage.

Stages, in order: ``load`` (backend library and graphs), ``encode`` (CLIP and VAE encoder),
``denoise`` (the U-Net steps), ``decode`` (the VAE decoder, one chunk at a time). The
prediction uses only the manifest (sizes, frame count, guidance batch, decode chunk), the
graph files' sizes and a per-backend calibration (``CALIBRATIONS``):

    resident = base + weights · Σ graph file bytes + per_graph · graphs   (after loading)
    load     = resident
    encode   = load    + encoder working memory (pixel = H·W)
    denoise  = encode  + U-Net working memory (pixel = latent pixel of the guided batch, B·F·h·w)
                       + the sampling loop's NumPy arrays
    decode   = denoise − loop arrays + decoder working memory (pixel = K·H·W)
                       + the decoded video's NumPy arrays (T frames)
    working  = fixed + per_byte · graph bytes + pixels · (per_pixel + per_pixel_mib · graph MiB)

The last term is there because activations grow with the networks' widths, which an artifact
does not record: a graph's size stands for its width (measured: ONNX Runtime's U-Net held
15 KiB per latent pixel on tiny and demo, 36 on mid).

Stages add up because a backend keeps a graph's working memory after its calls (ONNX Runtime
an arena per session, MindSpore each compiled graph). The per-backend constants are fitted
from ``python -m svdeploy.benchmarks.memplan`` (svdeploy/benchmarks/README.md has the table).
The constants hold for the widths they were fitted on (tiny, demo, mid: VAE ch 32, U-Net
32–64 channels); a full-size SVD (VAE ch 128, U-Net 320) needs its own fit.

The plan is for runs of two or more steps: ONNX Runtime sizes a session's arena on its second
call, so a 1-step run stays below it (measured on tiny: 214 MB against 275–283 MB).

The plan is deterministic: the decode chunk is the artifact's; nothing here looks at the free
memory of the machine, so the same command gives the same video everywhere. ``--max-memory``
only refuses (naming the stage over the limit and the largest decode chunk that would fit).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from svdeploy.errors import InputError, MemoryLimitError
from svdeploy.manifest import Manifest, read_manifest

from .backends import BACKEND_FORMATS, choose_backend, required_graph_names, runnable_format
from .chain import chained_frame_count
from .decode import check_overlap, decode_windows
from .draws import check_clips

STAGES = ("load", "encode", "denoise", "decode")
MiB = 1 << 20


Terms = Tuple[float, float, float, float]


@dataclass(frozen=True)
class Calibration:
    """Bytes of one backend's process, per stage (module doc). A graph's working memory is
    ``fixed + per_pixel · pixels`` and stays held after its stage (ONNX Runtime keeps each
    session's arena; MindSpore keeps each compiled graph), so the stages add up."""

    base: int  # interpreter, NumPy, Pillow and the backend library imported
    weights: float  # resident bytes per byte of graph file, after loading
    per_graph: int  # resident bytes per loaded graph (session / cell overhead)
    # working memory of a stage's graphs: (fixed, per byte of their graph files, per pixel,
    # per pixel and MiB of their graph files); see the module doc
    encoder: Terms  # CLIP + VAE encoder; pixel = one frame's H·W
    unet: Terms  # pixel = latent pixel of the guided batch, B·F·h·w
    decoder: Terms  # pixel = decoded pixel of one chunk, K·H·W
    fitted_on: str = ""
    # a decoder called twice or more holds this many times one call's working memory (ONNX
    # Runtime grows a session's arena on the second call: 1.95× measured on tiny and demo)
    repeated_decoder: float = 1.0


# Fitted on measurements of ``python -m svdeploy.benchmarks.memplan`` (one process per case;
# svdeploy/benchmarks/README.md "memory plan"): ONNX Runtime and OpenVINO on the tiny, demo
# and mid presets (2026-12-07), MindSpore on tiny (chunks 4 and 2) only (the mid run did not
# fit a shared machine, 2026-12-05). What they do not cover: see the module doc.
CALIBRATIONS: Dict[str, Calibration] = {
    "onnxruntime": Calibration(
        base=73 * MiB,
        weights=1.68,
        per_graph=int(4.4 * MiB),
        encoder=(8 * MiB, 0.0, 470.0, 0.0),
        unet=(0.0, 0.0, 14_450.0, 211.0),
        decoder=(0.0, 0.0, 1_900.0, 0.0),
        repeated_decoder=1.95,
        fitted_on="tiny, demo, mid",
    ),
    "openvino": Calibration(
        base=198 * MiB,
        weights=2.71,
        per_graph=0,
        encoder=(8 * MiB, 0.0, 392.0, 0.0),
        unet=(0.0, 0.0, 1_564.0, 18.1),
        decoder=(0.0, 0.0, 790.0, 0.0),
        fitted_on="tiny, demo, mid",
    ),
    "mindspore": Calibration(
        base=471 * MiB,
        weights=2.5,
        per_graph=0,
        encoder=(114 * MiB, 0.0, 0.0, 0.0),
        unet=(1354 * MiB, 0.0, 0.0, 0.0),
        decoder=(36 * MiB, 0.0, 42_000.0, 0.0),
        fitted_on="tiny",
    ),
}
# Backends without a measurement of their own borrow the figures of the backend running the
# same graph format (MindSpore Lite cannot be installed here, see README).
BORROWED = {"lite": "mindspore", "mindir": "mindspore", "onnx": "onnxruntime"}


def calibration_for(backend: str) -> Tuple[Calibration, str]:
    """(calibration, the backend it was measured on)."""
    if backend in CALIBRATIONS:
        return CALIBRATIONS[backend], backend
    source = BORROWED.get(backend) or BORROWED.get(BACKEND_FORMATS.get(backend, ""), "onnxruntime")
    return dataclasses.replace(CALIBRATIONS[source], fitted_on=""), source


@dataclass
class MemoryPlan:
    backend: str
    stages: Dict[str, int]
    decode_chunk: int
    frames_out: int
    parts: Dict[str, int] = field(default_factory=dict)
    fitted_on: str = ""
    borrowed_from: str = ""
    clips: int = 1
    manifest: Optional[Manifest] = field(default=None, repr=False)
    graph_bytes: Dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def peak_bytes(self) -> int:
        return max(self.stages.values())

    @property
    def peak_stage(self) -> str:
        return max(STAGES, key=lambda s: self.stages[s])

    def to_json(self) -> Dict[str, object]:
        return {
            "peak_bytes": self.peak_bytes,
            "peak_stage": self.peak_stage,
            "stages": dict(self.stages),
            "backend": self.backend,
            "decode_chunk": self.decode_chunk,
            "frames": self.frames_out,
            "calibration_fitted_on": self.fitted_on or None,
            "calibration_borrowed_from": self.borrowed_from or None,
            "parts": dict(self.parts),
        }

    def json_line(self) -> str:
        return json.dumps(self.to_json(), sort_keys=False)

    def table(self) -> str:
        lines = [
            f"memory plan ({self.backend}, decode chunk {self.decode_chunk}, "
            f"{self.frames_out} frames out): predicted peak resident memory"
        ]
        for stage in STAGES:
            mark = "  ← peak" if stage == self.peak_stage else ""
            lines.append(f"  {stage:<8} {format_size(self.stages[stage]):>10}{mark}")
        lines.append(f"  {'total':<8} {format_size(self.peak_bytes):>10}  (the largest stage)")
        if not self.fitted_on:
            lines.append(
                f"  note: no calibration was measured for {self.backend}; "
                f"{self.borrowed_from}'s figures stand in"
            )
        else:
            lines.append(
                f"  calibration fitted on the {self.fitted_on} preset(s): full-size "
                "networks are wider: check with python -m svdeploy.benchmarks.memplan"
            )
        return "\n".join(lines)


def format_size(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "kb": 1000,
    "m": MiB,
    "mib": MiB,
    "mb": 1000**2,
    "g": 1 << 30,
    "gib": 1 << 30,
    "gb": 1000**3,
    "t": 1 << 40,
    "tib": 1 << 40,
    "tb": 1000**4,
}


def parse_size(text: Union[str, int]) -> int:
    """Bytes from ``123``, ``512MiB``, ``8GiB``, ``2GB`` (decimal), ``1.5G`` (binary)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise InputError(
            f"memory size {text!r}: expected bytes or a number with a unit "
            "(KiB, MiB, GiB, TiB, kB, MB, GB, TB, K, M, G), e.g. 8GiB"
        )
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise InputError(f"memory size {text!r}: expected more than 0 bytes")
    return value


def _graph_bytes(manifest: Manifest, directory: Path, fmt: str) -> Dict[str, int]:
    sizes = {}
    for name in required_graph_names(manifest):
        entry = manifest.graph(name, fmt)
        files = [entry.file] + [e["file"] for e in entry.extra.get("external_files", [])]
        sizes[name] = sum(os.path.getsize(directory / f) for f in files)
    return sizes


def plan_memory(
    manifest: Manifest,
    graph_bytes: Dict[str, int],
    backend: str,
    *,
    clips: int = 1,
    decode_overlap: int = 0,
    decode_chunk: Optional[int] = None,
) -> MemoryPlan:
    """The plan of one run (module doc); ``decode_chunk`` asks "what if the artifact's decoder
    had chunks of this many frames" (used to name the largest chunk that fits a limit)."""
    cal, source = calibration_for(backend)
    clips = check_clips(clips)
    check_overlap(decode_overlap, manifest.decode_chunk_size)
    chunk = decode_chunk or manifest.decode_chunk_size
    frames, channels, lat_h, lat_w = manifest.latent_shape
    pixels = manifest.height * manifest.width
    total = chained_frame_count(clips, frames)
    latent_frame = channels * lat_h * lat_w * 4
    resident = (
        cal.base + int(cal.weights * sum(graph_bytes.values())) + cal.per_graph * len(graph_bytes)
    )
    # sampling loop: latents, scaled copy, U-Net input (2C channels) and output per guided
    # batch, guidance halves; chained clips keep every clip's final latents
    loop_arrays = (4 + 5 * manifest.guidance_batch) * frames * latent_frame + total * latent_frame
    # decoded video: the blended accumulator, its normalised copy, then the [0,1] frames
    video_arrays = 3 * total * 3 * pixels * 4

    encode, unet, decode = _graph_working(manifest, cal, graph_bytes, total, chunk, decode_overlap)
    stages = {
        "load": resident,
        "encode": resident + encode,
        "denoise": resident + encode + unet + loop_arrays,
        "decode": resident + encode + unet + decode + video_arrays + total * latent_frame,
    }
    parts = {
        "base": cal.base,
        "graph_files": sum(graph_bytes.values()),
        "resident": resident,
        "loop_arrays": loop_arrays,
        "video_arrays": video_arrays,
    }
    return MemoryPlan(
        backend=backend,
        stages=stages,
        decode_chunk=chunk,
        frames_out=total,
        parts=parts,
        fitted_on=cal.fitted_on,
        borrowed_from="" if source == backend else source,
        clips=clips,
        manifest=manifest,
        graph_bytes=dict(graph_bytes),
    )


def _graph_working(
    manifest: Manifest,
    cal: Calibration,
    graph_bytes: Dict[str, int],
    total: int,
    chunk: int,
    decode_overlap: int,
) -> Tuple[int, int, int]:
    """Working memory of the encoders, the U-Net and the decoder over what stays resident: each
    grows with its graphs' size and with the elements one call handles."""
    frames, _, lat_h, lat_w = manifest.latent_shape
    pixels = manifest.height * manifest.width

    def working(terms: Terms, graphs: Tuple[str, ...], count: int) -> int:
        size = sum(graph_bytes.get(g, 0) for g in graphs)
        return int(terms[0] + terms[1] * size + count * (terms[2] + terms[3] * size / MiB))

    encode = working(cal.encoder, ("image_encoder", "vae_encoder"), pixels)
    unet = working(cal.unet, ("unet",), manifest.guidance_batch * frames * lat_h * lat_w)
    decode = working(cal.decoder, ("vae_decoder",), chunk * pixels)
    if _decoder_calls(total, chunk, decode_overlap, frames) > 1:
        decode = int(decode * cal.repeated_decoder)
    return encode, unet, decode


def _decoder_calls(total: int, chunk: int, overlap: int, frames: int) -> int:
    """Calls of the chunk-sized decoder graph for ``total`` frames."""
    if total < chunk:
        return 1
    windows = decode_windows(total, chunk, overlap, tail=frames % chunk or None)
    return sum(1 for w in windows if w.graph == "vae_decoder")


def plan_for_artifact(
    artifact: Union[str, os.PathLike],
    backend: Optional[str] = None,
    *,
    clips: int = 1,
    decode_overlap: int = 0,
    images: int = 1,
    lite_python: Optional[str] = None,
) -> MemoryPlan:
    """Read the manifest (no hashing), settle the backend as ``svd-run`` would, and plan.
    A batch of ``images`` runs one video at a time, so its plan is one video's."""
    directory = Path(artifact)
    manifest = read_manifest(directory, verify_hashes=False, formats=[])
    chosen = choose_backend(manifest, backend, lite_python=lite_python)
    # the files the backend will load (lite: its Lite graphs, else the MindIR ones)
    fmt = runnable_format(chosen, manifest.formats())
    assert fmt is not None  # choose_backend picks a backend that can run one of the formats
    sizes = _graph_bytes(manifest, directory, fmt)
    return plan_memory(manifest, sizes, chosen, clips=clips, decode_overlap=decode_overlap)


def largest_fitting_chunk(plan: MemoryPlan, limit: int) -> int:
    """The largest decode chunk (frames) whose plan fits ``limit`` in every stage; 0 if none."""
    assert plan.manifest is not None, "a plan made by plan_memory"
    for chunk in range(plan.manifest.num_frames, 0, -1):
        trial = plan_memory(
            plan.manifest, plan.graph_bytes, plan.backend, clips=plan.clips, decode_chunk=chunk
        )
        if trial.peak_bytes <= limit:
            return chunk
    return 0


def check_memory_limit(plan: MemoryPlan, limit: int) -> None:
    """Refuse (MemoryLimitError) when the plan's peak exceeds ``limit``: the message names the
    first stage over the limit and the largest decode chunk whose plan would fit."""
    over = [s for s in STAGES if plan.stages[s] > limit]
    if not over:
        return
    stage = over[0]
    chunk = largest_fitting_chunk(plan, limit)
    if chunk == 0:
        advice = (
            "no decode chunk fits: the "
            + "/".join(s for s in over if s != "decode")
            + " stage alone needs more"
            if set(over) != {"decode"}
            else "even 1-frame decode chunks do not fit"
        )
    elif chunk >= plan.decode_chunk:
        advice = "the decode chunk is not what exceeds it"
    else:
        advice = (
            f"the largest decode chunk that fits is {chunk} frame(s): re-export with "
            f"svd-export --decode-chunk-size {chunk}"
        )
    raise MemoryLimitError(
        f"the predicted peak resident memory is {format_size(plan.peak_bytes)} "
        f"({plan.peak_bytes} bytes), over --max-memory {format_size(limit)} ({limit} bytes) in "
        f"the {stage} stage ({format_size(plan.stages[stage])}, decode chunk "
        f"{plan.decode_chunk}); {advice}. Nothing was run or written"
    )


__all__ = [
    "STAGES",
    "Calibration",
    "CALIBRATIONS",
    "MemoryPlan",
    "format_size",
    "parse_size",
    "plan_memory",
    "plan_for_artifact",
    "largest_fitting_chunk",
    "check_memory_limit",
]
