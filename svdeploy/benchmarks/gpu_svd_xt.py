"""Full-size SVD-XT on one NVIDIA GPU: svdeploy's GPU-capable backends against diffusers fp16.

    python -m svdeploy.benchmarks.gpu_svd_xt --out gpu-results --work /data/svd-xt-work

Random weights (timing only), 25 frames at 576×1024, 25 Euler steps, classifier-free guidance,
the same image, image noise and initial latents for every peer. Peers:

- ``svdeploy-onnxruntime-cuda``: the exported ONNX artifact (``--dtype``, fp16 by default)
  through svdeploy's VideoPipeline; the runtime picks ONNX Runtime's CUDAExecutionProvider
  when onnxruntime-gpu is installed (the loader asks for CUDA first).
- ``svdeploy-mindspore-gpu``: the MindIR artifact through the runtime's mindspore backend on
  MindSpore's GPU device, when a GPU build of MindSpore is installed.
- ``diffusers-fp16``: StableVideoDiffusionPipeline in float16 on the same GPU.

Each peer runs in its own process; figures land in ``--out/gpu_report.json`` and
``gpu_report.md`` (per video, per step, per U-Net call, parity of the frames against diffusers
fp16, peak GPU memory). Without an NVIDIA GPU the script stops with exit status 2 and says what
it found; ``--plan`` prints what it would do without touching a GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import click

from svdeploy.cliutil import friendly_errors
from svdeploy.errors import SvdeployError

from .common import fmt_bytes, fmt_seconds, write_json_atomic, write_text_atomic

GPU_PEERS = ("svdeploy-onnxruntime-cuda", "svdeploy-mindspore-gpu", "diffusers-fp16")
REPORT_JSON = "gpu_report.json"
REPORT_MD = "gpu_report.md"


class NoGpuError(SvdeployError):
    """No usable NVIDIA GPU on this machine."""


@dataclass
class GpuPlan:
    out: Path
    work: Path
    frames: int = 25
    height: int = 576
    width: int = 1024
    steps: int = 25
    repeats: int = 3
    decode_chunk_size: int = 8
    dtype: str = "fp16"
    peers: Sequence[str] = GPU_PEERS
    seed: int = 0

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data.update(out=str(self.out), work=str(self.work), peers=list(self.peers))
        return data

    def describe(self) -> str:
        lines = [
            f"SVD-XT random weights, {self.frames} frames {self.height}×{self.width}, "
            f"{self.steps} steps, CFG, decode chunk {self.decode_chunk_size}, "
            f"{self.repeats} timed videos per peer after a 1-step warm-up",
            f"1. weights: diffusers random init at svd_xt sizes → diffusers folder → "
            f"svd-convert → {self.work}/checkpoint (same numbers for every peer)",
            f"2. svd-export --dtype {self.dtype} --decode-chunk-size {self.decode_chunk_size} "
            f"(onnx for ONNX Runtime; mindir for MindSpore) → {self.work}/artifact-*",
            "3. per peer, one process: " + ", ".join(self.peers),
            f"4. report: {self.out}/{REPORT_JSON}, {self.out}/{REPORT_MD}",
        ]
        return "\n".join(lines)


@dataclass
class GpuResult:
    peer: str
    ok: bool
    reason: str = ""
    video_s: List[float] = field(default_factory=list)
    step_s: List[float] = field(default_factory=list)
    unet_call_s: List[float] = field(default_factory=list)
    load_s: Optional[float] = None
    warmup_s: Optional[float] = None
    peak_gpu_bytes: Optional[int] = None
    parity_max_abs: Optional[float] = None
    details: Dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# GPU discovery
# ---------------------------------------------------------------------------------------------
def detect_gpu() -> Dict[str, Any]:
    """What this machine offers: nvidia-smi, torch.cuda, ONNX Runtime providers, MindSpore."""
    found: Dict[str, Any] = {}
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        found["nvidia_smi"] = smi.stdout.strip() if smi.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        found["nvidia_smi"] = None
    try:
        import torch

        found["torch_cuda"] = bool(torch.cuda.is_available())
        found["torch_device"] = torch.cuda.get_device_name(0) if found["torch_cuda"] else None
    except ImportError:
        found["torch_cuda"] = None
    try:
        import onnxruntime as ort

        found["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        found["onnxruntime_providers"] = None
    return found


def require_gpu(found: Dict[str, Any]) -> None:
    if not found.get("nvidia_smi") and not found.get("torch_cuda"):
        raise NoGpuError(
            "no NVIDIA GPU here: nvidia-smi "
            + ("absent" if found.get("nvidia_smi") is None else "found none")
            + f", torch.cuda.is_available() = {found.get('torch_cuda')}, ONNX Runtime providers "
            f"{found.get('onnxruntime_providers')}; run this script on a machine with an NVIDIA "
            "GPU (pip install onnxruntime-gpu for the ONNX Runtime peer), or use --plan"
        )


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def _median(values: Sequence[float]) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def write_gpu_report(
    plan: GpuPlan, gpu: Dict[str, Any], results: Sequence[GpuResult], command: str
) -> List[Path]:
    """gpu_report.json and gpu_report.md in ``plan.out`` (atomic)."""
    reference = next((r for r in results if r.peer == "diffusers-fp16" and r.ok), None)
    ref_video = _median(reference.video_s) if reference else None
    rows = []
    for r in results:
        video = _median(r.video_s)
        rows.append(
            {
                **asdict(r),
                "video_median_s": video,
                "step_median_s": _median(r.step_s),
                "unet_call_median_s": _median(r.unet_call_s),
                "speedup_vs_diffusers_fp16": (ref_video / video) if (ref_video and video) else None,
            }
        )
    data = {
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "plan": plan.to_json(),
        "gpu": gpu,
        "rows": rows,
    }
    plan.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan.out / REPORT_JSON, data)
    lines = [
        f"# SVD-XT on GPU: {gpu.get('torch_device') or gpu.get('nvidia_smi')}",
        "",
        f"- command: `{command}`",
        f"- {plan.describe().splitlines()[0]}",
        "",
        "| peer | s / video | s / step | s / U-Net call | speed-up vs diffusers fp16 | "
        "peak GPU memory | frames max abs diff vs diffusers |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if not row["ok"]:
            lines.append(f"| {row['peer']} | not run: {row['reason']} |  |  |  |  |  |")
            continue
        speed = row["speedup_vs_diffusers_fp16"]
        parity = row["parity_max_abs"]
        lines.append(
            f"| {row['peer']} | {fmt_seconds(row['video_median_s'])} | "
            f"{fmt_seconds(row['step_median_s'])} | {fmt_seconds(row['unet_call_median_s'])} | "
            f"{'-' if speed is None else f'{speed:.2f}×'} | {fmt_bytes(row['peak_gpu_bytes'])} | "
            f"{'-' if parity is None else f'{parity:.1e}'} |"
        )
    write_text_atomic(plan.out / REPORT_MD, "\n".join(lines) + "\n")
    return [plan.out / REPORT_JSON, plan.out / REPORT_MD]


# ---------------------------------------------------------------------------------------------
# The GPU run: preparation here, each peer in a child process (`--run-peer`)
# ---------------------------------------------------------------------------------------------
def prepare(plan: GpuPlan, validate: bool) -> Dict[str, Any]:  # pragma: no cover - GPU host only
    """Weights and exports (CPU work; cached in --work)."""
    from svdeploy.cliutil import setup_mindspore
    from svdeploy.config import load_model_config
    from svdeploy.export import export_artifact

    from .weights import prepare_weights

    cfg = load_model_config("svd_xt")
    weights = prepare_weights(cfg, plan.work, plan.seed, use_diffusers=True)
    if weights.diffusers_dir is None:
        raise SvdeployError(
            f"diffusers is needed for the GPU comparison: {weights.diffusers_unavailable}"
        )
    artifacts: Dict[str, str] = {}
    for fmt, marker in (("onnx", "onnxruntime"), ("mindir", "mindspore")):
        if not any(marker in p for p in plan.peers):
            continue
        size = f"{plan.height}x{plan.width}"
        target = plan.work / (
            f"artifact-{fmt}-{plan.dtype}-f{plan.frames}-{size}-k{plan.decode_chunk_size}"
        )
        if not (target / "manifest.json").is_file():
            setup_mindspore("graph")
            export_artifact(
                weights.checkpoint_dir,
                target,
                frames=plan.frames,
                height=plan.height,
                width=plan.width,
                decode_chunk_size=plan.decode_chunk_size,
                formats=(fmt,),
                dtype=plan.dtype,
                validate=validate,
                progress=True,
                log=lambda m: click.echo(m, err=True),
            )
        artifacts[fmt] = str(target)
    return {
        "checkpoint": str(weights.checkpoint_dir),
        "diffusers": str(weights.diffusers_dir),
        "artifacts": artifacts,
    }


def _inputs(plan: GpuPlan) -> Dict[str, Any]:
    import numpy as np

    from .common import demo_image

    rng = np.random.default_rng(plan.seed)
    image_noise = rng.standard_normal((1, 3, plan.height, plan.width), dtype=np.float32)
    latents = rng.standard_normal(
        (1, plan.frames, 4, plan.height // 8, plan.width // 8), dtype=np.float32
    )
    return {
        "image": demo_image(plan.height, plan.width),
        "image_noise": image_noise,
        "latents": latents,
    }


def _diffusers_fp16(
    plan: GpuPlan, prepared: Dict[str, Any], result: GpuResult
) -> Any:  # pragma: no cover
    import numpy as np
    import torch

    inputs = _inputs(plan)
    t0 = time.perf_counter()
    pipe = _diffusers_fp16_pipeline(Path(prepared["diffusers"]))
    result.load_s = time.perf_counter() - t0
    video = _diffusers_fp16_video(pipe, plan, inputs, result)
    t0 = time.perf_counter()
    video(1)
    result.warmup_s = time.perf_counter() - t0
    result.video_s.clear()
    result.step_s.clear()
    torch.cuda.reset_peak_memory_stats()
    frames = [video(plan.steps) for _ in range(plan.repeats)][0]
    result.details["torch_max_memory_allocated"] = int(torch.cuda.max_memory_allocated())
    np.save(plan.work / "frames-diffusers-fp16.npy", frames)


def _diffusers_fp16_pipeline(folder: Path) -> Any:  # pragma: no cover
    """diffusers' StableVideoDiffusionPipeline in float16 on the GPU, from a diffusers folder."""
    import torch
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from .weights import align_diffusers_eps
    from .worker import SVD_SCHEDULER_CONFIG

    dtype = torch.float16
    unet = UNetSpatioTemporalConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype)
    align_diffusers_eps(unet, 1e-5)
    pipe = StableVideoDiffusionPipeline(
        unet=unet,
        vae=AutoencoderKLTemporalDecoder.from_pretrained(folder / "vae", torch_dtype=dtype),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(
            folder / "image_encoder", torch_dtype=dtype
        ),
        scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG),
        feature_extractor=CLIPImageProcessor(),
    ).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _diffusers_fp16_video(
    pipe: Any, plan: GpuPlan, inputs: Dict[str, Any], result: GpuResult
) -> Any:  # pragma: no cover
    """A function steps → frames that runs ``pipe`` on the given inputs (its one random draw
    replayed from ``inputs``) and appends the video and step seconds to ``result``."""
    import diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion as svd_module
    import numpy as np
    import torch
    from PIL import Image

    dtype = torch.float16
    image_noise = torch.from_numpy(inputs["image_noise"])

    def video(steps: int) -> Any:
        marks: List[float] = []

        def on_step(_pipe: Any, _i: int, _t: Any, kwargs: Dict[str, Any]) -> Dict[str, Any]:
            torch.cuda.synchronize()
            marks.append(time.perf_counter())
            return kwargs

        def replay(
            shape: Any,
            generator: Any = None,
            device: Any = None,
            dtype: Any = None,
            layout: Any = None,
        ) -> Any:
            return image_noise.to(device=device, dtype=dtype)  # the pipeline's one random draw

        original = svd_module.randn_tensor
        svd_module.randn_tensor = replay
        try:
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.inference_mode():
                frames = pipe(
                    Image.fromarray(inputs["image"]),
                    height=plan.height,
                    width=plan.width,
                    num_frames=plan.frames,
                    num_inference_steps=steps,
                    decode_chunk_size=plan.decode_chunk_size,
                    latents=torch.from_numpy(inputs["latents"]).to("cuda", dtype),
                    output_type="np",
                    callback_on_step_end=on_step,
                ).frames[0]
            torch.cuda.synchronize()
            total = time.perf_counter() - start
        finally:
            svd_module.randn_tensor = original
        result.video_s.append(total)
        result.step_s.extend(b - a for a, b in zip(marks, marks[1:]))
        return np.asarray(frames, np.float32)

    return video


def _svdeploy(
    plan: GpuPlan, prepared: Dict[str, Any], result: GpuResult
) -> None:  # pragma: no cover
    import numpy as np

    from svdeploy.runtime import VideoPipeline

    backend = "onnxruntime" if "onnxruntime" in result.peer else "mindspore"
    fmt = "onnx" if backend == "onnxruntime" else "mindir"
    if fmt not in prepared["artifacts"]:
        raise SvdeployError(f"no {fmt} artifact was exported")
    if backend == "mindspore":
        import mindspore as ms

        ms.set_device("GPU")  # raises when this MindSpore build has no GPU support
    else:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SvdeployError(
                "onnxruntime has no CUDAExecutionProvider (pip install "
                f"onnxruntime-gpu); providers: {ort.get_available_providers()}"
            )
    inputs = _inputs(plan)
    t0 = time.perf_counter()
    pipe = VideoPipeline.load(prepared["artifacts"][fmt], backend=backend)
    result.load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipe.generate(
        inputs["image"],
        num_inference_steps=1,
        image_noise=inputs["image_noise"],
        latents=inputs["latents"],
        progress=False,
    )
    result.warmup_s = time.perf_counter() - t0
    frames = None
    for _ in range(plan.repeats):
        out = pipe.generate(
            inputs["image"],
            num_inference_steps=plan.steps,
            image_noise=inputs["image_noise"],
            latents=inputs["latents"],
            progress=False,
        )
        frames = out.frames if frames is None else frames
        result.video_s.append(out.timings["end_to_end_s"])
        result.step_s.extend(out.timings["per_step_s"])
        unet = out.timings["graphs"]["unet"]
        result.unet_call_s.append(unet["seconds"] / max(unet["calls"], 1))
    reference = plan.work / "frames-diffusers-fp16.npy"
    if reference.is_file():
        result.parity_max_abs = float(np.abs(frames - np.load(reference)).max())


def run_peer_here(
    plan: GpuPlan, peer: str, prepared: Dict[str, Any]
) -> GpuResult:  # pragma: no cover
    result = GpuResult(peer=peer, ok=False)
    (_diffusers_fp16 if peer == "diffusers-fp16" else _svdeploy)(plan, prepared, result)
    result.ok = True
    return result


def _gpu_memory_used() -> Optional[int]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return int(out.stdout.split()[0]) * 2**20 if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _command(argv: Sequence[str]) -> str:
    return "python -m svdeploy.benchmarks.gpu_svd_xt " + " ".join(argv)


def run_peer_process(
    plan: GpuPlan, peer: str, prepared_path: Path, argv: Sequence[str]
) -> GpuResult:  # pragma: no cover
    """The peer in a child process; peak GPU memory = max nvidia-smi memory.used above the
    level before it started (polled every 0.5 s)."""
    import threading

    result_path = plan.out / f".peer-{peer}.json"
    command = [
        sys.executable,
        "-m",
        "svdeploy.benchmarks.gpu_svd_xt",
        *argv,
        "--run-peer",
        peer,
        "--prepared",
        str(prepared_path),
    ]
    base = _gpu_memory_used() or 0
    peak = [0]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            used = _gpu_memory_used()
            if used is not None:
                peak[0] = max(peak[0], used - base)
            stop.wait(0.5)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    done = subprocess.run(command, capture_output=True, text=True)
    stop.set()
    poller.join()
    if done.returncode != 0 or not result_path.is_file():
        tail = [ln for ln in done.stderr.splitlines() if ln.strip()][-1:] or [
            f"exit {done.returncode}"
        ]
        return GpuResult(peer=peer, ok=False, reason=tail[0][:400])
    result = GpuResult(**json.loads(result_path.read_text()))
    result.peak_gpu_bytes = peak[0] or None
    result_path.unlink()
    return result


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for gpu_report.json and gpu_report.md.",
)
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for the random full-size weights (about 9 GB of safetensors, twice: "
    "diffusers folder and svdeploy checkpoint) and the exports. Default: OUT/work.",
)
@click.option(
    "--frames",
    type=click.IntRange(min=1),
    default=25,
    show_default=True,
    help="Frames per video (SVD-XT: 25).",
)
@click.option(
    "--height",
    type=click.IntRange(min=64),
    default=576,
    show_default=True,
    help="Video height in pixels (a multiple of 64).",
)
@click.option(
    "--width",
    type=click.IntRange(min=64),
    default=1024,
    show_default=True,
    help="Video width in pixels (a multiple of 64).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=25,
    show_default=True,
    help="Denoising steps per video.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Timed videos per peer after a 1-step warm-up video.",
)
@click.option(
    "--decode-chunk-size",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Frames per VAE decoder call, for every peer.",
)
@click.option(
    "--dtype",
    type=click.Choice(["fp16", "fp32"]),
    default="fp16",
    show_default=True,
    help="Compute precision of svdeploy's exported graphs (diffusers runs fp16).",
)
@click.option(
    "--peers",
    default=",".join(GPU_PEERS),
    show_default=True,
    help="Comma-separated peers: " + ", ".join(GPU_PEERS) + ".",
)
@click.option(
    "--export-validate/--no-export-validate",
    default=False,
    show_default=True,
    help="Let svd-export check each full-size graph against the float32 network on the "
    "CPU (slow at full size; the frames are compared with diffusers anyway).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of weights and inputs.")
@click.option(
    "--plan",
    "plan_only",
    is_flag=True,
    help="Print what would run and check the options; touch no GPU.",
)
@click.option("--run-peer", type=click.Choice(GPU_PEERS), default=None, hidden=True)
@click.option(
    "--prepared", type=click.Path(dir_okay=False, path_type=Path), default=None, hidden=True
)
@friendly_errors
def main(
    out: Path,
    work: Optional[Path],
    frames: int,
    height: int,
    width: int,
    steps: int,
    repeats: int,
    decode_chunk_size: int,
    dtype: str,
    peers: str,
    export_validate: bool,
    seed: int,
    plan_only: bool,
    run_peer: Optional[str],
    prepared: Optional[Path],
) -> None:
    """Time full-size SVD-XT on an NVIDIA GPU: svdeploy's GPU backends and diffusers fp16.

    Random weights, the same image and noise for every peer; one process per peer."""
    plan = _checked_plan(
        out, work, frames, height, width, steps, repeats, decode_chunk_size, dtype, peers, seed
    )
    if plan_only:
        click.echo(plan.describe())
        return
    if run_peer is not None:  # pragma: no cover - child process on the GPU host
        result = run_peer_here(plan, run_peer, json.loads(Path(str(prepared)).read_text()))
        write_json_atomic(plan.out / f".peer-{run_peer}.json", asdict(result))
        return
    gpu = detect_gpu()
    require_gpu(gpu)
    _run_peers(plan, gpu, export_validate)  # pragma: no cover - reached only on a GPU machine


def _checked_plan(
    out: Path,
    work: Optional[Path],
    frames: int,
    height: int,
    width: int,
    steps: int,
    repeats: int,
    decode_chunk_size: int,
    dtype: str,
    peers: str,
    seed: int,
) -> GpuPlan:
    """The plan of the options, refused as a usage error before anything (a GPU) is needed."""
    chosen = tuple(p.strip() for p in peers.split(",") if p.strip())
    bad = [p for p in chosen if p not in GPU_PEERS]
    if bad or not chosen:
        raise click.BadParameter(
            f"{peers!r}: expected some of {', '.join(GPU_PEERS)}", param_hint="--peers"
        )
    if decode_chunk_size > frames:
        raise click.BadParameter(
            f"{decode_chunk_size} is above --frames {frames}", param_hint="--decode-chunk-size"
        )
    if height % 64 or width % 64:
        raise click.BadParameter(
            f"{height}×{width}: SVD needs multiples of 64 (VAE 8 × U-Net 8)",
            param_hint="--height/--width",
        )
    return GpuPlan(
        out=out,
        work=work or out / "work",
        frames=frames,
        height=height,
        width=width,
        steps=steps,
        repeats=repeats,
        decode_chunk_size=decode_chunk_size,
        dtype=dtype,
        peers=chosen,
        seed=seed,
    )


def _run_peers(
    plan: GpuPlan, gpu: Dict[str, Any], export_validate: bool
) -> None:  # pragma: no cover
    """Prepare once, then one process per peer, rewriting the report after each, so that a
    long run's report holds the peers done so far."""
    argv = [a for a in sys.argv[1:]]
    prepared_path = plan.work / "gpu_prepared.json"
    plan.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(prepared_path, prepare(plan, export_validate))
    results: List[GpuResult] = []
    # diffusers first: its frames are the parity reference of the others
    for peer in sorted(plan.peers, key=lambda p: p != "diffusers-fp16"):
        click.echo(f"peer {peer}", err=True)
        results.append(run_peer_process(plan, peer, prepared_path, argv))
        write_gpu_report(plan, gpu, results, _command(argv))
    click.echo(f"report: {plan.out / REPORT_MD}")


if __name__ == "__main__":  # pragma: no cover
    main()
