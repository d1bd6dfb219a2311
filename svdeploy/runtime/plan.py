"""Memory plan of a run, before the run: predicted peak resident memory of each stage.

Stages, in order: ``load`` (backend library and graphs), ``encode`` (CLIP and VAE encoder),
``denoise`` (the U-Net steps), ``decode`` (the VAE decoder, one chunk at a time). The
prediction uses only the manifest (sizes, frame count, guidance batch, decode chunk), the
graph files' sizes and a per-backend calibration (``CALIBRATIONS``):

    resident  = base + weights · Σ graph file bytes          (what stays after loading)
    load      = resident + load_transient · largest graph file
    encode    = resident + encoder · H·W
    denoise   = resident + unet · B·F·h·w + NumPy arrays of the sampling loop
    decode    = resident + decoder · K·H·W + NumPy arrays of the decoded video (T frames)

``encoder``, ``unet`` and ``decoder`` are bytes of backend working memory per pixel (per latent
pixel for the U-Net), fitted from ``python -m svdeploy.benchmarks.memplan`` on the tiny and mid
presets (svdeploy/benchmarks/README.md has the table). They depend on the networks' widths,
which an artifact does not record: the figures hold for the widths they were fitted on (VAE
ch 32, U-Net 32–64 channels); a full-size SVD (VAE ch 128, U-Net 320) needs its own fit.

The plan is deterministic: the decode chunk is the artifact's; nothing here looks at the free
memory of the machine, so the same command gives the same video everywhere. ``--max-memory``
only refuses (naming the stage over the limit and the largest decode chunk that would fit).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Union

from svdeploy.errors import InputError, MemoryLimitError
from svdeploy.manifest import Manifest, read_manifest

from .backends import BACKEND_FORMATS, choose_backend, required_graph_names
from .chain import chained_frame_count, check_clips
from .decode import check_overlap

STAGES = ("load", "encode", "denoise", "decode")
MiB = 1 << 20


@dataclass(frozen=True)
class Calibration:
    base: int               # bytes: interpreter, NumPy, Pillow, the backend library
    weights: float          # resident bytes per byte of graph file
    load_transient: float   # extra bytes while loading, per byte of the largest graph file
    encoder: float          # bytes per pixel of the video frame (VAE encoder + CLIP)
    unet: float             # bytes per latent pixel of the guided batch (B·F·h·w)
    decoder: float          # bytes per decoded pixel of one chunk (K·H·W)
    fitted: bool = True     # False: not measured here (a guess from a neighbouring backend)


# Fitted with ``python -m svdeploy.benchmarks.memplan`` (one process per case), 2026-12-05,
# on the tiny and mid presets; see the module doc for what they do not cover.
CALIBRATIONS: Dict[str, Calibration] = {
    "onnxruntime": Calibration(base=75 * MiB, weights=1.0, load_transient=1.0, encoder=120.0,
                               unet=1500.0, decoder=500.0),
    "mindspore": Calibration(base=330 * MiB, weights=1.5, load_transient=1.0, encoder=200.0,
                             unet=3000.0, decoder=1500.0),
    # MindSpore Lite cannot be installed here (README): the MindSpore figures stand in.
    "lite": Calibration(base=330 * MiB, weights=1.5, load_transient=1.0, encoder=200.0,
                        unet=3000.0, decoder=1500.0, fitted=False),
}


@dataclass
class MemoryPlan:
    backend: str
    stages: Dict[str, int]
    decode_chunk: int
    frames_out: int
    parts: Dict[str, int] = field(default_factory=dict)
    calibrated: bool = True
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
        return {"peak_bytes": self.peak_bytes, "peak_stage": self.peak_stage,
                "stages": dict(self.stages), "backend": self.backend,
                "decode_chunk": self.decode_chunk, "frames": self.frames_out,
                "calibrated": self.calibrated, "parts": dict(self.parts)}

    def json_line(self) -> str:
        return json.dumps(self.to_json(), sort_keys=False)

    def table(self) -> str:
        lines = [f"memory plan ({self.backend}, decode chunk {self.decode_chunk}, "
                 f"{self.frames_out} frames out): predicted peak resident memory"]
        for stage in STAGES:
            mark = "  ← peak" if stage == self.peak_stage else ""
            lines.append(f"  {stage:<8} {format_size(self.stages[stage]):>10}{mark}")
        lines.append(f"  {'total':<8} {format_size(self.peak_bytes):>10}  (the largest stage)")
        if not self.calibrated:
            lines.append(f"  note: no calibration measured for {self.backend}; figures borrowed")
        return "\n".join(lines)


def format_size(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 1000, "m": MiB, "mib": MiB,
          "mb": 1000 ** 2, "g": 1 << 30, "gib": 1 << 30, "gb": 1000 ** 3, "t": 1 << 40,
          "tib": 1 << 40, "tb": 1000 ** 4}


def parse_size(text: Union[str, int]) -> int:
    """Bytes from ``123``, ``512MiB``, ``8GiB``, ``2GB`` (decimal), ``1.5G`` (binary)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise InputError(f"memory size {text!r}: expected bytes or a number with a unit "
                         "(KiB, MiB, GiB, TiB, kB, MB, GB, TB, K, M, G), e.g. 8GiB")
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


def plan_memory(manifest: Manifest, graph_bytes: Dict[str, int], backend: str, *,
                clips: int = 1, decode_overlap: int = 0,
                decode_chunk: Optional[int] = None) -> MemoryPlan:
    """The plan of one run (module doc); ``decode_chunk`` asks "what if the artifact's decoder
    had chunks of this many frames" (used to name the largest chunk that fits a limit)."""
    cal = CALIBRATIONS[backend]
    clips = check_clips(clips)
    check_overlap(decode_overlap, manifest.decode_chunk_size)
    chunk = decode_chunk or manifest.decode_chunk_size
    frames, channels, lat_h, lat_w = manifest.latent_shape
    pixels = manifest.height * manifest.width
    total = chained_frame_count(clips, frames)
    latent_frame = channels * lat_h * lat_w * 4
    resident = cal.base + int(cal.weights * sum(graph_bytes.values()))
    # sampling loop: latents, scaled copy, U-Net input (2C channels) and output per guided
    # batch, guidance halves; chained clips keep every clip's final latents
    loop_arrays = (4 + 5 * manifest.guidance_batch) * frames * latent_frame + total * latent_frame
    # decoded video: the blended accumulator, its normalised copy, then the [0,1] frames
    video_arrays = 3 * total * 3 * pixels * 4 + total * latent_frame
    stages = {
        "load": resident + int(cal.load_transient * max(graph_bytes.values())),
        "encode": resident + int(cal.encoder * pixels),
        "denoise": resident + int(cal.unet * manifest.guidance_batch * frames * lat_h * lat_w)
        + loop_arrays,
        "decode": resident + int(cal.decoder * chunk * pixels) + video_arrays,
    }
    parts = {"base": cal.base, "graph_files": sum(graph_bytes.values()), "resident": resident,
             "loop_arrays": loop_arrays, "video_arrays": video_arrays}
    return MemoryPlan(backend=backend, stages=stages, decode_chunk=chunk, frames_out=total,
                      parts=parts, calibrated=cal.fitted, clips=clips, manifest=manifest,
                      graph_bytes=dict(graph_bytes))


def plan_for_artifact(artifact: Union[str, os.PathLike], backend: Optional[str] = None, *,
                      clips: int = 1, decode_overlap: int = 0, images: int = 1) -> MemoryPlan:
    """Read the manifest (no hashing), settle the backend as ``svd-run`` would, and plan.
    A batch of ``images`` runs one video at a time, so its plan is one video's."""
    directory = Path(artifact)
    manifest = read_manifest(directory, verify_hashes=False, formats=[])
    chosen = choose_backend(manifest, backend)
    sizes = _graph_bytes(manifest, directory, BACKEND_FORMATS[chosen])
    return plan_memory(manifest, sizes, chosen, clips=clips, decode_overlap=decode_overlap)


def largest_fitting_chunk(plan: MemoryPlan, limit: int) -> int:
    """The largest decode chunk (frames) whose plan fits ``limit`` in every stage; 0 if none."""
    assert plan.manifest is not None, "a plan made by plan_memory"
    for chunk in range(plan.manifest.num_frames, 0, -1):
        trial = plan_memory(plan.manifest, plan.graph_bytes, plan.backend, clips=plan.clips,
                            decode_chunk=chunk)
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
        advice = ("no decode chunk fits: the " + "/".join(s for s in over if s != "decode")
                  + " stage alone needs more" if set(over) != {"decode"} else
                  "even 1-frame decode chunks do not fit")
    elif chunk >= plan.decode_chunk:
        advice = "the decode chunk is not what exceeds it"
    else:
        advice = (f"the largest decode chunk that fits is {chunk} frame(s): re-export with "
                  f"svd-export --decode-chunk-size {chunk}")
    raise MemoryLimitError(
        f"the predicted peak resident memory is {format_size(plan.peak_bytes)} "
        f"({plan.peak_bytes} bytes), over --max-memory {format_size(limit)} ({limit} bytes) in "
        f"the {stage} stage ({format_size(plan.stages[stage])}, decode chunk "
        f"{plan.decode_chunk}); {advice}. Nothing was run or written")


__all__ = ["STAGES", "Calibration", "CALIBRATIONS", "MemoryPlan", "format_size", "parse_size",
           "plan_memory", "plan_for_artifact", "largest_fitting_chunk", "check_memory_limit"]
