"""Settings of one svd-bench run and its work directory: identical weights for every peer, the
exported artifacts, diffusers' U-Net through torch.onnx, the graphs' inputs, the GEMM peak."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from svdeploy.config import ModelConfig, check_video_size, to_dict
from svdeploy.contract import NETWORK_NAMES
from svdeploy.errors import ConfigError

from .common import save_npz_atomic, write_json_atomic
from .machine import BF16_CPU_FLAGS, cpu_bf16_flags
from .peers import PEERS
from .processes import ChildRun, MemoryGuard, ServedWorker, run_worker
from .weights import PreparedWeights, config_digest, prepare_weights

SUITES: Tuple[str, ...] = ("export", "graphs", "e2e", "memory", "train", "serve")
GRAPHS: Tuple[str, ...] = NETWORK_NAMES  # the graphs svd-bench measures (svdeploy.contract)
GEMM_BACKENDS: Tuple[str, ...] = ("onnxruntime", "numpy", "torch", "mindspore", "torch-bf16")
SCHEDULES: Tuple[str, ...] = ("interleaved", "sequential")


@dataclass
class BenchSettings:
    """Everything a run depends on; recorded in report.json."""

    config: str  # preset name or YAML path, as given
    cfg: ModelConfig
    out: Path
    work: Path
    frames: int
    height: int
    width: int
    guidance: bool = True
    decode_chunk_size: int = 0  # resolved: 1..frames
    dtype: str = "fp32"
    conv: str = "native"  # svd-export --conv for the MindIR graphs
    formats: Tuple[str, ...] = ("mindir", "onnx")
    peers: Tuple[str, ...] = PEERS
    graphs: Tuple[str, ...] = GRAPHS
    repeats: int = 10
    warmup: int = 2
    threads: int = 2
    e2e_repeats: int = 3
    steps: int = 25
    case_budget_s: float = 300.0
    case_timeout_s: float = 3600.0
    schedule: str = "interleaved"  # interleaved | sequential
    freeze_idle: bool = True  # SIGSTOP the idle peers while one is timed
    standalone_repeats: int = 3  # then each peer alone, for the standalone column
    memory_limit_gb: Optional[float] = None  # None: 75 % of the machine's memory
    memory_frames: Tuple[int, ...] = ()
    memory_chunks: Tuple[int, ...] = ()
    temporal_only: bool = True
    serve_clients: Tuple[int, ...] = (1, 4)  # concurrent clients, one server run each
    serve_seconds: float = 60.0
    serve_replicas: int = 1
    gemm_size: int = 4096
    seed: int = 0
    use_diffusers: bool = True
    export_validate: bool = True
    notes: List[str] = field(default_factory=list)

    @property
    def guidance_batch(self) -> int:
        return 2 if self.guidance else 1

    @property
    def memory_limit_bytes(self) -> Optional[int]:
        if self.memory_limit_gb is not None:
            return int(self.memory_limit_gb * 2**30)
        try:
            import psutil
        except ImportError:
            return None
        return int(0.75 * psutil.virtual_memory().total)

    @property
    def latent_hw(self) -> Tuple[int, int]:
        f = self.cfg.vae.downsample_factor
        return self.height // f, self.width // f

    def to_json(self) -> Dict[str, Any]:
        out = {
            k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in self.__dict__.items()
            if k != "cfg"
        }
        out["variant"] = self.cfg.variant
        out["memory_limit_bytes"] = self.memory_limit_bytes
        out["guidance_batch"] = self.guidance_batch
        return out


def resolve_settings(
    cfg: ModelConfig,
    config: str,
    out: Path,
    *,
    work: Optional[Path] = None,
    frames: Optional[int] = None,
    height: Optional[int] = None,
    width: Optional[int] = None,
    **kwargs: Any,
) -> BenchSettings:
    """Fill defaults from the config and check every value (errors name the option)."""
    f = frames or cfg.num_frames
    h = height or cfg.height
    w = width or cfg.width
    check_video_size(cfg, h, w, f, "bench")
    notes = _size_notes(cfg, f, h, w)
    chunk = kwargs.pop("decode_chunk_size", None) or cfg.sampling.decode_chunk_size or f
    if not 1 <= chunk <= f:
        raise ConfigError(f"--decode-chunk-size {chunk}: expected 1..{f} (the frame count)")
    peers = _resolve_peers(tuple(kwargs.pop("peers", None) or ()), notes)
    graphs = tuple(kwargs.pop("graphs", None) or GRAPHS)
    formats = tuple(kwargs.pop("formats", None) or ("mindir", "onnx"))
    dtype = kwargs.pop("dtype", "fp32")
    _check_graphs_formats_dtype(graphs, formats, dtype)
    conv = _resolve_conv(kwargs.pop("conv", None) or "auto", notes)
    steps = kwargs.pop("steps", None) or cfg.sampling.num_inference_steps
    memory_frames = tuple(kwargs.pop("memory_frames", None) or (f, 2 * f, 4 * f))
    memory_chunks = tuple(
        kwargs.pop("memory_chunks", None) or sorted({max(1, f // 4), max(1, f // 2), f})
    )
    _check_counts(memory_frames, memory_chunks, kwargs)
    settings = BenchSettings(
        config=config,
        cfg=cfg,
        out=out,
        work=work or out / "work",
        frames=f,
        height=h,
        width=w,
        decode_chunk_size=chunk,
        dtype=dtype,
        formats=formats,
        peers=peers,
        graphs=graphs,
        steps=steps,
        memory_frames=memory_frames,
        memory_chunks=memory_chunks,
        conv=conv,
        notes=notes,
        **{k: v for k, v in kwargs.items() if v is not None},
    )
    return settings


def _size_notes(cfg: ModelConfig, f: int, h: int, w: int) -> List[str]:
    """Notes on a frame count or video size other than the preset's."""
    notes: List[str] = []
    if f != cfg.num_frames:
        notes.append(
            f"frame count reduced from the preset's {cfg.num_frames} to {f} (--frames)"
            if f < cfg.num_frames
            else f"frame count {f} instead of the preset's {cfg.num_frames} (--frames)"
        )
    if (h, w) != (cfg.height, cfg.width):
        notes.append(f"video size {h}×{w} instead of the preset's {cfg.height}×{cfg.width}")
    return notes


def _resolve_peers(peers: Tuple[str, ...], notes: List[str]) -> Tuple[str, ...]:
    """The peers asked for (checked), or the default ones (appends a note to ``notes`` when
    the bf16 peers are left out)."""
    for p in peers:
        if p not in PEERS:
            raise ConfigError(f"--peers {p!r}: expected some of {', '.join(PEERS)}")
    if peers:
        return peers
    if cpu_bf16_flags() != []:
        return PEERS
    # emulated bf16 runs a mid U-Net call for minutes: not a peer anyone would pick
    notes.append(
        "diffusers-bf16 and openvino-bf16 left out of the default peers: this "
        "CPU has no bf16 "
        f"instructions ({', '.join(BF16_CPU_FLAGS)} absent), so PyTorch emulates "
        "bf16; name it in --peers to measure it anyway"
    )
    return tuple(p for p in PEERS if p not in ("diffusers-bf16", "openvino-bf16"))


def _check_graphs_formats_dtype(
    graphs: Tuple[str, ...], formats: Tuple[str, ...], dtype: str
) -> None:
    for g in graphs:
        if g not in GRAPHS:
            raise ConfigError(f"--graphs {g!r}: expected some of {', '.join(GRAPHS)}")
    for fmt in formats:
        if fmt not in ("mindir", "onnx", "lite"):
            raise ConfigError(f"--formats {fmt!r}: expected some of mindir, onnx, lite")
    if dtype == "bf16" and ("onnx" in formats or "lite" in formats):
        raise ConfigError(
            "--dtype bf16 with --formats onnx: svd-export writes bf16 graphs as "
            "MindIR only; pass --formats mindir"
        )


def _resolve_conv(conv: str, notes: List[str]) -> str:
    """native or im2col; ``auto`` is resolved once here, so every worker (exports,
    ms-pynative) uses the same kernel, and a note says what the probe measured."""
    if conv not in ("auto", "native", "im2col"):
        raise ConfigError(f"--conv {conv!r}: expected auto, native or im2col")
    if conv != "auto":
        return conv
    from svdeploy.kernels.probe import conv_probe, fastest_conv

    conv = fastest_conv()
    notes.append(
        f"--conv auto chose {conv}: a 3×3 64→64 convolution on "
        "(4, 64, 32, 32) took "
        + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in sorted(conv_probe().items()))
    )
    return conv


def _check_counts(
    memory_frames: Tuple[int, ...], memory_chunks: Tuple[int, ...], kwargs: Dict[str, Any]
) -> None:
    """The memory sweep, schedule, memory limit and repeat counts."""
    for value, name in [(v, "--memory-frames") for v in memory_frames] + [
        (v, "--memory-chunks") for v in memory_chunks
    ]:
        if value < 1:
            raise ConfigError(f"{name} {value}: expected positive integers")
    if kwargs.get("schedule", "interleaved") not in SCHEDULES:
        raise ConfigError(
            f"--schedule {kwargs['schedule']!r}: expected one of {', '.join(SCHEDULES)}"
        )
    if kwargs.get("memory_limit_gb") is not None and kwargs["memory_limit_gb"] <= 0:
        raise ConfigError(
            f"--memory-limit {kwargs['memory_limit_gb']}: expected a positive number of GiB"
        )
    if kwargs.get("standalone_repeats") is not None and kwargs["standalone_repeats"] < 0:
        raise ConfigError(f"--standalone-repeats {kwargs['standalone_repeats']}: expected ≥ 0")
    for key in ("repeats", "e2e_repeats", "threads", "gemm_size"):
        if key in kwargs and kwargs[key] is not None and kwargs[key] < 1:
            raise ConfigError(f"--{key.replace('_', '-')} {kwargs[key]}: expected ≥ 1")


# ---------------------------------------------------------------------------------------------
# Work directory
# ---------------------------------------------------------------------------------------------
class Workspace:
    """Prepared files, created on first use and reused by later suites and later runs."""

    def __init__(self, settings: BenchSettings, log: Callable[[str], None]) -> None:
        self.s = settings
        self.log = log
        self._weights: Optional[PreparedWeights] = None
        self.failures: Dict[str, str] = {}
        self.guard = MemoryGuard(settings.memory_limit_bytes)

    # -- weights -----------------------------------------------------------------------------
    @property
    def weights(self) -> PreparedWeights:
        if self._weights is None:
            self.log(f"weights: preparing in {self.s.work}")
            self._weights = prepare_weights(
                self.s.cfg, self.s.work, self.s.seed, self.s.use_diffusers
            )
            self.log(
                f"weights: {self._weights.source}" + (" (reused)" if self._weights.reused else "")
            )
        return self._weights

    @property
    def has_diffusers(self) -> bool:
        return self.weights.diffusers_dir is not None

    def digest(self) -> str:
        return config_digest(self.s.cfg, self.s.seed, self.has_diffusers)

    def worker_base(self) -> Dict[str, Any]:
        """The spec fields every worker needs to rebuild a PeerContext."""
        w = self.weights
        return {
            "config": to_dict(self.s.cfg),
            "frames": self.s.frames,
            "height": self.s.height,
            "width": self.s.width,
            "guidance": self.s.guidance,
            "decode_chunk_size": self.s.decode_chunk_size,
            "dtype": self.s.dtype,
            "threads": self.s.threads,
            "checkpoint_dir": str(w.checkpoint_dir),
            "diffusers_dir": str(w.diffusers_dir) if w.diffusers_dir else None,
            "artifact_dir": None,
            "plain_onnx_path": None,
            "seed": self.s.seed,
            "conv": self.s.conv,
        }

    def run(self, task: str, spec: Dict[str, Any]) -> ChildRun:
        return run_worker(task, spec, self.s.threads, self.s.case_timeout_s, self.log, self.guard)

    def serve(self, kind: str, spec: Dict[str, Any]) -> ServedWorker:
        return ServedWorker(kind, spec, self.s.threads, self.s.case_timeout_s, self.guard, self.log)

    # -- exported artifacts --------------------------------------------------------------------
    def artifact(
        self,
        formats: Sequence[str],
        *,
        frames: Optional[int] = None,
        chunk: Optional[int] = None,
        graphs: Optional[Sequence[str]] = None,
    ) -> Optional[Path]:
        """An export with (at least) these formats and graphs; no validation, since the suites
        measure parity against diffusers. An earlier export holding more is reused. None when
        the export failed (the reason is in ``failures``)."""
        s = self.s
        frames = frames or s.frames
        chunk = chunk or (s.decode_chunk_size if frames == s.frames else frames)
        fixed = {
            "digest": self.digest(),
            "frames": frames,
            "chunk": chunk,
            "hw": [s.height, s.width],
            "cfg": s.guidance,
            "dtype": s.dtype,
            "conv": s.conv,
        }
        wanted_formats, wanted_graphs = set(formats), set(graphs or GRAPHS)
        reusable = self._reusable_artifact(fixed, wanted_formats, wanted_graphs)
        if reusable is not None:
            return reusable
        key = dict(fixed, formats=sorted(wanted_formats), graphs=sorted(wanted_graphs))
        name = (
            "artifact-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        )
        if name in self.failures:
            return None
        directory = s.work / name
        self.log(
            f"export ({', '.join(sorted(wanted_formats))}; {frames} frames, chunk {chunk}"
            + (f"; {', '.join(sorted(wanted_graphs))}" if graphs else "")
            + ") for the measurements"
        )
        spec = dict(
            self.worker_base(),
            out_dir=str(directory),
            formats=sorted(wanted_formats),
            frames=frames,
            decode_chunk_size=chunk,
            graphs=list(graphs) if graphs else None,
            validate=False,
        )
        result = self.run("export", spec)
        if not result.ok:
            self.failures[name] = f"svd-export failed: {result.error()}"
            shutil.rmtree(directory, ignore_errors=True)
            return None
        write_json_atomic(directory / "bench_stamp.json", {"key": key, "export": result.result})
        return directory

    def _reusable_artifact(
        self, fixed: Dict[str, Any], formats: Set[str], graphs: Set[str]
    ) -> Optional[Path]:
        """An earlier export of the same model and shapes holding at least these formats and
        graphs: exports take minutes, so one serves every suite that it can."""
        for stamp in sorted(self.s.work.glob("artifact-*/bench_stamp.json")):
            key = json.loads(stamp.read_text()).get("key", {})
            if (
                isinstance(key, dict)
                and all(key.get(k) == v for k, v in fixed.items())
                and formats <= set(key.get("formats", ()))
                and graphs <= set(key.get("graphs", ()))
            ):
                return stamp.parent
        return None

    def artifact_error(self, formats: Sequence[str]) -> str:
        return "; ".join(self.failures.values()) or f"no {'/'.join(formats)} export"

    # -- diffusers' U-Net through torch.onnx ----------------------------------------------------
    def plain_onnx(self) -> Tuple[Optional[Path], Dict[str, Any]]:
        s = self.s
        if not self.has_diffusers:
            return None, {"error": self.weights.diffusers_unavailable}
        h, w = s.latent_hw
        path = (
            s.work
            / "plain-onnx"
            / f"unet-{self.digest()}-f{s.frames}-{h}x{w}-b{s.guidance_batch}.onnx"
        )
        meta = path.with_suffix(".json")
        if path.is_file() and meta.is_file():
            return path, json.loads(meta.read_text())
        if "plain-onnx" in self.failures:
            return None, {"error": self.failures["plain-onnx"]}
        self.log("torch.onnx export of diffusers' U-Net (plain-onnx peer)")
        run = self.run("plain_onnx", dict(self.worker_base(), plain_onnx_path=str(path)))
        if not run.ok:
            self.failures["plain-onnx"] = f"torch.onnx.export failed: {run.error()}"
            return None, {"error": self.failures["plain-onnx"]}
        info = dict(run.result or {}, peak_rss_bytes=run.peak_rss_bytes)
        write_json_atomic(meta, info)
        return path, info

    # -- inputs ----------------------------------------------------------------------------------
    def graph_inputs(self, graph: str) -> Tuple[Path, List[str]]:
        """Deterministic inputs of ``graph`` in the ranges the runtime feeds (saved once)."""
        from svdeploy.export.specs import graph_specs
        from svdeploy.export.specs import resolve_settings as export_settings

        s = self.s
        es = export_settings(
            s.cfg,
            frames=s.frames,
            height=s.height,
            width=s.width,
            guidance=s.guidance,
            decode_chunk_size=s.decode_chunk_size,
            formats=("onnx",),
            dtype="fp32",
        )
        spec = next(g for g in graph_specs(s.cfg, es) if g.name == graph)
        rng = np.random.default_rng([s.seed, GRAPHS.index(graph) if graph in GRAPHS else 9])
        arrays: Dict[str, np.ndarray] = {}
        for t in spec.inputs:
            if t.name == "image":
                a = rng.uniform(-1.0, 1.0, t.shape)
            elif t.name == "pixel_values":
                a = rng.standard_normal(t.shape)
            elif t.name == "c_noise":
                a = np.full(t.shape, 0.25 * np.log(2.0))  # sigma = 2
            elif t.name == "time_ids":
                a = np.tile(np.array([[6.0, 127.0, 0.02]]), (t.shape[0], 1))
            elif t.name == "z":
                a = rng.standard_normal(t.shape) / s.cfg.vae.scale_factor
            else:
                a = rng.standard_normal(t.shape)
            arrays[t.name] = a.astype(np.float32)
        name = (
            f"{graph}-f{s.frames}-{s.height}x{s.width}-b{s.guidance_batch}"
            f"-k{s.decode_chunk_size}.npz"
        )
        path = s.work / "inputs" / name
        if not path.is_file():
            save_npz_atomic(path, arrays)
        return path, [t.name for t in spec.inputs]

    # -- GEMM peak -------------------------------------------------------------------------------
    def gemm_peak(self) -> Dict[str, Any]:
        """Measured n×n×n float32 (and torch bf16) matmul throughput, same thread count, one
        process per library. fp32 peak = best median GFLOP/s over the fp32 libraries."""
        s = self.s
        results: Dict[str, Any] = {}
        for backend in GEMM_BACKENDS:
            if backend.startswith("torch") and not self.has_diffusers:
                results[backend] = {"error": self.weights.diffusers_unavailable}
                continue
            n = s.gemm_size
            if backend == "torch-bf16" and cpu_bf16_flags() == []:
                n = min(n, 512)  # emulated bf16 (~1 GFLOP/s): a 4096³ call would take minutes
            self.log(f"GEMM peak: {backend} {n}³")
            run = self.run(
                "gemm", {"backend": backend, "n": n, "threads": s.threads, "repeats": 10}
            )
            results[backend] = run.result if run.ok else {"error": run.error()}
        fp32 = {b: r["gflops"] for b, r in results.items() if "gflops" in r and b != "torch-bf16"}
        peak32 = max(fp32.values()) if fp32 else None
        bf16 = results.get("torch-bf16", {}).get("gflops")
        return {
            "n": s.gemm_size,
            "threads": s.threads,
            "by_library": results,
            "fp32_peak_gflops": peak32,
            "fp32_peak_library": max(fp32, key=fp32.get) if fp32 else None,
            "bf16_peak_gflops": bf16,
        }


__all__ = [
    "BenchSettings",
    "resolve_settings",
    "Workspace",
    "SUITES",
    "GRAPHS",
    "GEMM_BACKENDS",
    "SCHEDULES",
]
