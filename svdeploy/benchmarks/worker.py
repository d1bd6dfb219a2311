"""One measurement in its own process: ``python -m svdeploy.benchmarks.worker TASK SPEC RESULT``.

svd-bench runs every case here so that each has its own peak RSS, its own thread pools and
only the libraries its peer needs. SPEC and RESULT are JSON files; the parent (the suites)
writes the spec and reads the result. One-shot tasks: export, plain_onnx, decode, train, gemm.
Served tasks (serve-graph, serve-e2e) load once and then time one call per request on stdin,
so that the parent can interleave the peers. Not a user command.
"""

from __future__ import annotations

import contextlib
import functools
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from svdeploy.config import ModelConfig, model_config_from_dict

from .common import save_npz_atomic, write_json_atomic
from .machine import set_mindspore_threads, set_torch_threads
from .processes import PROTOCOL
from .stats import time_repeated


def _rss_now() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def peak_rss_of_this_process() -> int:
    """VmHWM: the high-water mark of this process's own memory since exec. Not ru_maxrss:
    Linux carries the parent's RSS at fork into the child's ru_maxrss across exec, so a small
    worker started by a large parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# e2e / memory peer → (runtime backend, precision)
SVDEPLOY_PEERS = {
    "svdeploy-onnxruntime": ("onnxruntime", "auto"),
    "svdeploy-mindspore": ("mindspore", "auto"),
    "svdeploy-openvino": ("openvino", "fp32"),
    "svdeploy-openvino-bf16": ("openvino", "bf16"),
}


def _context(spec: Dict[str, Any]):  # -> PeerContext
    from .peers import PeerContext

    def path(key: str) -> Optional[Path]:
        return Path(spec[key]) if spec.get(key) else None

    return PeerContext(
        cfg=model_config_from_dict(spec["config"]),
        frames=spec["frames"],
        height=spec["height"],
        width=spec["width"],
        guidance=spec["guidance"],
        decode_chunk_size=spec["decode_chunk_size"],
        dtype=spec["dtype"],
        threads=spec["threads"],
        checkpoint_dir=path("checkpoint_dir"),
        diffusers_dir=path("diffusers_dir"),
        artifact_dir=path("artifact_dir"),
        plain_onnx_path=path("plain_onnx_path"),
        conv=spec.get("conv", "native"),
    )


def _threads_for(peer: str, threads: int) -> Dict[str, Any]:
    """Size the pools of the library a peer uses (OpenMP / BLAS come from the environment)."""
    info: Dict[str, Any] = {"threads": threads}
    if peer.startswith("diffusers") or peer in ("torch", "plain-onnx-export"):
        set_torch_threads(threads)
    if peer.startswith("ms-") or peer in ("mindspore", "svdeploy-mindspore"):
        problem = set_mindspore_threads(threads)
        if problem:
            info["mindspore_threads"] = problem
    return info


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------
def task_export(spec: Dict[str, Any]) -> Dict[str, Any]:
    """export_artifact of one graph in one format (svd-export's library call)."""
    from svdeploy.cliutil import setup_mindspore
    from svdeploy.export import export_artifact

    setup_mindspore("graph")
    set_mindspore_threads(spec["threads"])
    rss_before = _rss_now()
    result = export_artifact(
        spec["checkpoint_dir"],
        spec["out_dir"],
        frames=spec["frames"],
        height=spec["height"],
        width=spec["width"],
        guidance=spec["guidance"],
        decode_chunk_size=spec["decode_chunk_size"],
        formats=tuple(spec["formats"]),
        dtype=spec["dtype"],
        graphs=spec.get("graphs"),
        validate=spec["validate"],
        overwrite=True,
        seed=spec.get("seed", 0),
        conv=spec.get("conv", "native") if "mindir" in spec["formats"] else "native",
        progress=False,
    )
    return {
        "rss_after_imports_bytes": rss_before,
        "seconds": result.seconds,
        "reports": [
            {
                "name": r.name,
                "format": r.format,
                "file": r.file,
                "bytes": r.bytes,
                "export_seconds": r.export_seconds,
                "parity_max_rel_error": r.parity_max_rel_error,
                "tolerance": r.tolerance,
            }
            for r in result.reports
        ],
    }


class GraphSession:
    """One peer's graph, loaded and compiled (first call), then called on request."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        from .peers import make_runner

        self.spec = spec
        peer, graph = spec["peer"], spec["graph"]
        self.info = _threads_for(peer, spec["threads"])
        with np.load(spec["inputs_path"]) as data:
            self.inputs = {name: np.ascontiguousarray(data[name]) for name in spec["input_order"]}
        t0 = time.perf_counter()
        self.run, setup = make_runner(peer, graph, _context(spec), spec["input_order"])
        self.info.update(setup=setup, load_s=time.perf_counter() - t0)
        self.info["rss_after_load_bytes"] = _rss_now()
        t0 = time.perf_counter()
        self.output = self.run(self.inputs)  # graph compilation / first allocations happen here
        self.info["first_call_s"] = time.perf_counter() - t0
        self.info["output_shape"] = list(np.shape(self.output))

    def call(self) -> Dict[str, Any]:
        self.output = self.run(self.inputs)
        return {}

    warmup = call

    def finish(self) -> Dict[str, Any]:
        save_npz_atomic(
            Path(self.spec["output_path"]), {"output": np.asarray(self.output, np.float32)}
        )
        return dict(self.info, peak_rss_self_bytes=peak_rss_of_this_process())


def task_plain_onnx(spec: Dict[str, Any]) -> Dict[str, Any]:
    from .peers import export_plain_onnx

    set_torch_threads(spec["threads"])
    return export_plain_onnx(_context(spec), Path(spec["plain_onnx_path"]))


def task_decode(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Decode ``frames`` latent frames in chunks of ``chunk``: svdeploy's decoder graph through a
    runtime backend (the loop of VideoPipeline._decode), or diffusers' decode_latents."""
    frames, chunk, peer = spec["frames"], spec["chunk"], spec["peer"]
    cfg = model_config_from_dict(spec["config"])
    factor = cfg.vae.downsample_factor
    h, w = spec["height"] // factor, spec["width"] // factor
    latents = np.random.default_rng(spec.get("seed", 0)).standard_normal(
        (1, frames, cfg.latent_channels, h, w), dtype=np.float32
    )
    info = _threads_for("torch" if peer == "diffusers" else peer, spec["threads"])
    rss_start = _rss_now()
    if peer == "diffusers":
        load_s, rss_loaded, decode_s, out_bytes = _decode_diffusers(spec, latents, frames, chunk)
    else:
        load_s, rss_loaded, decode_s, out_bytes = _decode_svdeploy(
            spec, cfg, peer, latents, frames, chunk
        )
    return dict(
        info,
        load_s=load_s,
        decode_s=decode_s,
        rss_start_bytes=rss_start,
        rss_after_load_bytes=rss_loaded,
        peak_rss_self_bytes=peak_rss_of_this_process(),
        output_bytes=int(out_bytes),
    )


def _decode_diffusers(
    spec: Dict[str, Any], latents: np.ndarray, frames: int, chunk: int
) -> Tuple[float, int, float, int]:
    """(load s, RSS once loaded, decode s, output bytes) of diffusers' decode_latents on the
    VAE alone: the other networks would only add to the memory measured. The load time holds
    the imports."""
    t0 = time.perf_counter()
    import types

    import torch
    from diffusers import AutoencoderKLTemporalDecoder, StableVideoDiffusionPipeline

    vae = AutoencoderKLTemporalDecoder.from_pretrained(Path(spec["diffusers_dir"]) / "vae").eval()
    owner = types.SimpleNamespace(vae=vae)  # decode_latents only touches self.vae
    load_s = time.perf_counter() - t0
    rss_loaded = _rss_now()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = StableVideoDiffusionPipeline.decode_latents(
            owner, torch.from_numpy(latents), frames, chunk
        )
    out_bytes = out.numel() * out.element_size()
    return load_s, rss_loaded, time.perf_counter() - t0, out_bytes


def _decode_svdeploy(
    spec: Dict[str, Any], cfg: ModelConfig, peer: str, latents: np.ndarray, frames: int, chunk: int
) -> Tuple[float, int, float, int]:
    """(load s, RSS once loaded, decode s, output bytes) of the exported decoder graph alone,
    called chunk by chunk as VideoPipeline._decode calls it. The load time holds the imports."""
    t0 = time.perf_counter()
    from svdeploy.manifest import read_manifest
    from svdeploy.runtime.backends import BACKEND_FORMATS, graph_loader, load_graph

    backend, precision = SVDEPLOY_PEERS[peer]
    if backend == "mindspore":
        import mindspore as ms

        ms.set_device("CPU")
    artifact = Path(spec["artifact_dir"])
    fmt = BACKEND_FORMATS[backend]
    manifest = read_manifest(artifact, verify_hashes=False, formats=[fmt])
    entry = manifest.graph("vae_decoder", fmt)
    loader = graph_loader(backend, precision, threads=spec["threads"])
    graph = load_graph(entry, artifact / entry.file, backend, manifest, loader)
    load_s = time.perf_counter() - t0
    rss_loaded = _rss_now()
    t0 = time.perf_counter()
    z = (latents[0] / np.float32(cfg.vae.scale_factor)).astype(np.float32)
    pieces = [
        graph(z=np.ascontiguousarray(z[i : i + chunk]))["frames"] for i in range(0, frames, chunk)
    ]
    out = np.concatenate(pieces, axis=0)
    return load_s, rss_loaded, time.perf_counter() - t0, out.nbytes


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------
SVD_SCHEDULER_CONFIG: Dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    trained_betas=None,
    prediction_type="v_prediction",
    interpolation_type="linear",
    use_karras_sigmas=True,
    sigma_min=0.002,
    sigma_max=700.0,
    timestep_spacing="leading",
    timestep_type="continuous",
    steps_offset=1,
)  # stabilityai/stable-video-diffusion-img2vid(-xt) scheduler_config.json


def _autocast_methods(module: Any, *names: str) -> None:
    """Run these methods of ``module`` under bf16 autocast (signatures kept: diffusers inspects
    them)."""
    import functools

    import torch

    for name in names:
        original = getattr(module, name)

        @functools.wraps(original)
        def wrapped(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return __original(*args, **kwargs)

        setattr(module, name, wrapped)


def _diffusers_svd_pipeline(spec: Dict[str, Any], cfg: ModelConfig, bf16: bool) -> Any:
    """diffusers' StableVideoDiffusionPipeline over the prepared diffusers networks, with SVD's
    scheduler; with ``bf16`` the networks (not the preprocessing) run under bf16 autocast."""
    import warnings

    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers import CLIPImageProcessor

    from .weights import load_diffusers_networks

    nets = load_diffusers_networks(Path(spec["diffusers_dir"]), cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extractor = CLIPImageProcessor()  # only its CLIP mean / std are used by the pipeline
    pipe = StableVideoDiffusionPipeline(
        unet=nets["unet"],
        vae=nets["vae"],
        image_encoder=nets["image_encoder"],
        scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG),
        feature_extractor=extractor,
    )
    pipe.set_progress_bar_config(disable=True)
    if bf16:
        # autocast around the networks only: around the whole pipeline it also reaches the
        # CLIP preprocessing, whose .numpy() cannot take bfloat16
        _autocast_methods(nets["unet"], "forward")
        _autocast_methods(nets["image_encoder"], "forward")
        _autocast_methods(nets["vae"], "encode", "decode")
    return pipe


def _diffusers_video(
    spec: Dict[str, Any],
    cfg: ModelConfig,
    image: np.ndarray,
    image_noise: np.ndarray,
    latents: np.ndarray,
    bf16: bool,
) -> Callable[[int], Dict[str, Any]]:
    """A function steps → {frames, timings} over diffusers' StableVideoDiffusionPipeline, with
    its one random draw (the image noise) and the initial latents taken from the given arrays."""
    import diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion as svd_module
    import torch
    from PIL import Image

    pipe = _diffusers_svd_pipeline(spec, cfg, bf16)
    picture = Image.fromarray(image)
    sampling = cfg.sampling

    def video(steps: int) -> Dict[str, Any]:
        marks: List[float] = []

        def on_step(_pipe: Any, _i: int, _t: Any, kwargs: Dict[str, Any]) -> Dict[str, Any]:
            marks.append(time.perf_counter())
            return kwargs

        with _replayed_draws(svd_module, [torch.from_numpy(image_noise)]):
            t0 = time.perf_counter()
            with torch.inference_mode():
                frames = pipe(
                    picture,
                    height=spec["height"],
                    width=spec["width"],
                    num_frames=spec["frames"],
                    num_inference_steps=steps,
                    min_guidance_scale=sampling.min_guidance_scale,
                    max_guidance_scale=sampling.max_guidance_scale,
                    fps=sampling.fps,
                    motion_bucket_id=sampling.motion_bucket_id,
                    noise_aug_strength=sampling.noise_aug_strength,
                    decode_chunk_size=spec["decode_chunk_size"],
                    latents=torch.from_numpy(latents),
                    output_type="np",
                    callback_on_step_end=on_step,
                ).frames
            total = time.perf_counter() - t0
        return {
            "frames": np.asarray(frames, np.float32)[0],
            "timings": _step_timings(marks, t0, total),
        }

    return video


@contextlib.contextmanager
def _replayed_draws(svd_module: Any, draws: List[Any]) -> Iterator[None]:
    """diffusers' random draws replaced by ours, in order, so that both runs see the same
    noise; a draw of an unexpected shape fails rather than drawing noise of its own."""
    pending = list(draws)
    original = svd_module.randn_tensor

    def replay(
        shape: Any, generator: Any = None, device: Any = None, dtype: Any = None, layout: Any = None
    ) -> Any:
        if not pending or tuple(pending[0].shape) != tuple(shape):
            raise RuntimeError(f"unexpected random draw of shape {tuple(shape)}")
        return pending.pop(0).to(device=device, dtype=dtype)

    svd_module.randn_tensor = replay
    try:
        yield
    finally:
        svd_module.randn_tensor = original


def _step_timings(marks: List[float], t0: float, total: float) -> Dict[str, Any]:
    """Per step: between consecutive step-end callbacks (the first from the pipeline start,
    so it also holds the image encoding; reported separately as encode+step1)."""
    per_step = [b - a for a, b in zip(marks, marks[1:])]
    return {
        "end_to_end_s": total,
        "per_step_s": per_step,
        "until_first_step_end_s": marks[0] - t0 if marks else None,
        "after_last_step_s": t0 + total - marks[-1] if marks else None,
    }


def _svdeploy_pipeline(spec: Dict[str, Any], backend: str, precision: str) -> Any:
    """VideoPipeline.load's steps, with the worker's thread count given to the backend
    (OpenVINO's default is every core; ONNX Runtime's loader takes its default too)."""
    from svdeploy.manifest import read_manifest
    from svdeploy.runtime import VideoPipeline
    from svdeploy.runtime.backends import (
        BACKEND_FORMATS,
        graph_loader,
        load_graph,
        required_graph_names,
    )

    if backend != "openvino":
        return VideoPipeline.load(spec["artifact_dir"], backend=backend, precision=precision)
    fmt = BACKEND_FORMATS[backend]
    directory = Path(spec["artifact_dir"])
    manifest = read_manifest(directory, verify_hashes=False, formats=[fmt])
    loader = graph_loader(backend, precision, threads=spec["threads"])
    graphs = {
        name: load_graph(
            manifest.graph(name, fmt),
            directory / manifest.graph(name, fmt).file,
            backend,
            manifest,
            loader,
        )
        for name in required_graph_names(manifest)
    }
    return VideoPipeline(
        manifest,
        graphs,
        backend=backend,
        graph_format=fmt,
        artifact_dir=directory,
        precision=precision,
    )


def _svdeploy_video(
    spec: Dict[str, Any],
    image: np.ndarray,
    image_noise: np.ndarray,
    latents: np.ndarray,
    backend: str,
    precision: str,
) -> Callable[[int], Dict[str, Any]]:
    pipe = _svdeploy_pipeline(spec, backend, precision)

    def video(steps: int) -> Dict[str, Any]:
        result = pipe.generate(
            image,
            num_inference_steps=steps,
            image_noise=image_noise,
            latents=latents,
            progress=False,
        )
        timings = {k: v for k, v in result.timings.items()}
        return {"frames": result.frames, "timings": timings}

    return video


class E2ESession:
    """One peer's image-to-video pipeline; warm-up = a 1-step video; call = one full video."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        peer = spec["peer"]
        self.spec = spec
        cfg = model_config_from_dict(spec["config"])
        self.info = _threads_for(peer, spec["threads"])
        with np.load(spec["inputs_path"]) as data:
            image, image_noise, latents = data["image"], data["image_noise"], data["latents"]
        t0 = time.perf_counter()
        if peer in ("diffusers", "diffusers-bf16"):
            self.video = _diffusers_video(
                spec, cfg, image, image_noise, latents, peer == "diffusers-bf16"
            )
        else:
            if peer == "svdeploy-mindspore":
                import mindspore as ms

                ms.set_device("CPU")
            backend, precision = SVDEPLOY_PEERS[peer]
            self.video = _svdeploy_video(spec, image, image_noise, latents, backend, precision)
        self.info["load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.video(1)  # every graph / kernel runs once: compilation, allocation
        self.info["warmup_s"] = time.perf_counter() - t0
        self.frames: Optional[np.ndarray] = None

    def call(self) -> Dict[str, Any]:
        out = self.video(self.spec["steps"])
        if self.frames is None:
            self.frames = out["frames"]
        return {"timings": out["timings"]}

    def warmup(self) -> Dict[str, Any]:
        self.video(1)
        return {}

    def finish(self) -> Dict[str, Any]:
        if self.frames is not None:
            save_npz_atomic(
                Path(self.spec["output_path"]), {"frames": np.asarray(self.frames, np.float32)}
            )
        return dict(
            self.info,
            rss_after_run_bytes=_rss_now(),
            peak_rss_self_bytes=peak_rss_of_this_process(),
        )


SESSIONS = {"graph": GraphSession, "e2e": E2ESession}


def _send(kind: str, payload: Any = None) -> None:
    sys.stdout.write(f"{PROTOCOL} {kind} {json.dumps(payload, default=str)}\n")
    sys.stdout.flush()


def serve(kind: str, spec: Dict[str, Any], result_path: Path) -> int:
    """Load a session, say READY, then answer commands from stdin, one per line:
    CALL / WARMUP (→ DONE {wall, cpu, ...}), QUIT (→ result file, BYE). The parent times every
    peer call by call, so peers can take turns (interleaved) and share the machine's load."""
    session = SESSIONS[kind](spec)
    _send("READY", {"rss_bytes": _rss_now()})
    for line in sys.stdin:
        command = line.strip()
        if command in ("CALL", "WARMUP"):
            c0 = time.process_time()
            t0 = time.perf_counter()
            extra = session.call() if command == "CALL" else session.warmup()
            _send("DONE", dict(extra, wall=time.perf_counter() - t0, cpu=time.process_time() - c0))
        elif command == "QUIT":
            write_json_atomic(
                result_path, dict(session.finish(), peak_rss_vmhwm_bytes=peak_rss_of_this_process())
            )
            _send("BYE")
            return 0
        elif command:
            _send("ERROR", f"unknown command {command!r}")
    return 1  # stdin closed without QUIT: the parent is gone


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def _train_batch(cfg: ModelConfig, frames: int, h: int, w: int, seed: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    c, d = cfg.latent_channels, cfg.unet.context_dim
    return {
        "x0": rng.standard_normal((frames, c, h, w), dtype=np.float32),
        "image_latent": rng.standard_normal((1, c, h, w), dtype=np.float32),
        "context": rng.standard_normal((1, 1, d), dtype=np.float32),
        "time_ids": np.array([[6.0, 127.0, 0.02]], np.float32),
        "sigma": np.array([1.5], np.float32),
        "noise": rng.standard_normal((frames, c, h, w), dtype=np.float32),
        "keep": np.array([1.0], np.float32),
    }


def _svdeploy_train_step(
    spec: Dict[str, Any], cfg: ModelConfig, batch: Dict[str, np.ndarray]
) -> tuple:
    """svdeploy.train's compiled step (StepRunner over EDMLoss), GRAPH_MODE, AdamW."""
    import mindspore as ms
    from mindspore import ParameterTuple

    from svdeploy.kernels.config import KernelConfig
    from svdeploy.models.build import load_network
    from svdeploy.train.config import OptimizerConfig
    from svdeploy.train.loss import EDMLoss
    from svdeploy.train.step import MicroBatch, StepRunner, select_trainable

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    kernels = KernelConfig.for_training(spec.get("conv", "im2col"), spec["dtype"])  # svd-train's
    unet = load_network("unet", spec["checkpoint_dir"], kernels, cfg)
    names, _frozen = select_trainable(unet, spec["temporal_only"])
    params = dict(unet.parameters_and_names())
    trainable = ParameterTuple([params[n] for n in names])
    unet.set_train(True)
    loss_net = EDMLoss(unet, spec["frames"], cfg.unet.addition_time_embed_dim)
    runner = StepRunner(
        loss_net, trainable, OptimizerConfig(), clip_norm=1.0, drop_overflow_update=True
    )
    micro = MicroBatch(**batch)

    def step() -> float:
        loss = runner.micro_step(micro, 1.0)
        runner.step(1e-5, 1.0)
        return loss

    trainable_count = sum(int(np.prod(p.shape)) for p in trainable)
    return step, {
        "implementation": "svdeploy.train.step.StepRunner + svdeploy.train.loss.EDMLoss "
        "(GRAPH_MODE; accumulate, finish, AdamW graphs)",
        "kernels": repr(kernels),
        "trainable_parameters": trainable_count,
    }


def _torch_train_step(
    spec: Dict[str, Any], cfg: ModelConfig, batch: Dict[str, np.ndarray]
) -> tuple:
    """The same EDM step on diffusers' U-Net in PyTorch eager: forward, backward, global-norm
    clipping at 1.0, torch.optim.AdamW (betas 0.9/0.98, weight decay 0.01 as svd_train.yaml)."""
    import torch

    from .weights import load_diffusers_networks

    unet = load_diffusers_networks(Path(spec["diffusers_dir"]), cfg)["unet"]
    unet.train()
    markers = ("temporal", "time_mixer", "time_pos_embed")
    trainable = []
    for name, param in unet.named_parameters():
        train = any(m in name for m in markers) or not spec["temporal_only"]
        param.requires_grad_(train)
        if train:
            trainable.append(param)
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, betas=(0.9, 0.98), weight_decay=0.01)
    t = {k: torch.from_numpy(v) for k, v in batch.items()}
    frames = spec["frames"]

    def step() -> float:
        s = t["sigma"].reshape(1, 1, 1, 1, 1)
        x0 = t["x0"][None]
        noisy = x0 + s * t["noise"][None]
        c_in = 1.0 / torch.sqrt(s * s + 1.0)
        c_skip = 1.0 / (s * s + 1.0)
        c_out = -s * c_in
        image = t["image_latent"][:, None].expand(1, frames, *t["image_latent"].shape[1:])
        out = unet(
            torch.cat([noisy * c_in, image], 2),
            0.25 * torch.log(t["sigma"][0]),
            encoder_hidden_states=t["context"],
            added_time_ids=t["time_ids"],
            return_dict=False,
        )[0]
        denoised = c_skip * noisy + c_out * out
        loss = ((s * s + 1.0) / (s * s) * (denoised - x0) ** 2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step, {
        "implementation": "diffusers UNetSpatioTemporalConditionModel, PyTorch eager, "
        "torch.optim.AdamW",
        "trainable_parameters": sum(p.numel() for p in trainable),
    }


def task_train(spec: Dict[str, Any]) -> Dict[str, Any]:
    peer = spec["peer"]
    cfg = model_config_from_dict(spec["config"])
    info = _threads_for("ms-" if peer == "svdeploy" else "torch", spec["threads"])
    factor = cfg.vae.downsample_factor
    batch = _train_batch(
        cfg, spec["frames"], spec["height"] // factor, spec["width"] // factor, spec.get("seed", 0)
    )
    t0 = time.perf_counter()
    step, setup = (_svdeploy_train_step if peer == "svdeploy" else _torch_train_step)(
        spec, cfg, batch
    )
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    first_loss = step()  # the first step compiles the graphs (MindSpore GRAPH_MODE)
    first_s = time.perf_counter() - t0
    stats = time_repeated(step, spec["repeats"], max(spec["warmup"] - 1, 0), spec.get("budget_s"))
    last_loss = step()
    return dict(
        info,
        setup=setup,
        build_s=build_s,
        first_step_s=first_s,
        compile_s=max(first_s - stats.median, 0.0),
        stats=stats.to_json(),
        first_loss=first_loss,
        last_loss=last_loss,
        peak_rss_self_bytes=peak_rss_of_this_process(),
    )


# ---------------------------------------------------------------------------------------------
# GEMM peak
# ---------------------------------------------------------------------------------------------
def task_gemm(spec: Dict[str, Any]) -> Dict[str, Any]:
    """A large square matmul (n × n × n) through one library; GFLOP/s of the median run."""
    backend, n, threads = spec["backend"], spec["n"], spec["threads"]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    fn: Callable[[], Any]
    if backend == "onnxruntime":
        fn, what = _onnxruntime_gemm(a, b, threads)
    elif backend == "numpy":
        fn = functools.partial(np.matmul, a, b)
        what = f"numpy {np.__version__} matmul fp32 (BLAS threads from OPENBLAS/OMP_NUM_THREADS)"
    elif backend in ("torch", "torch-bf16"):
        import torch

        torch.set_num_threads(threads)
        dtype = torch.bfloat16 if backend == "torch-bf16" else torch.float32
        ta, tb = torch.from_numpy(a).to(dtype), torch.from_numpy(b).to(dtype)
        fn = functools.partial(torch.mm, ta, tb)
        what = f"torch {torch.__version__} mm {'bf16' if dtype == torch.bfloat16 else 'fp32'}"
    elif backend == "mindspore":
        fn, what = _mindspore_gemm(a, b, threads)
    else:
        raise ValueError(f"GEMM backend {backend!r} is unknown")
    stats = time_repeated(fn, spec["repeats"], 2)
    flops = 2.0 * n**3
    return {
        "backend": backend,
        "what": what,
        "n": n,
        "stats": stats.to_json(),
        "gflops": flops / stats.median / 1e9,
        "best_gflops": flops / stats.min / 1e9,
    }


def _onnxruntime_gemm(a: np.ndarray, b: np.ndarray, threads: int) -> Tuple[Callable[[], Any], str]:
    """(call, description) of a one-node MatMul graph with ``b`` as its initializer, as the
    exported graphs hold their weights."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from .machine import ort_session_options

    n = a.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        initializer=[numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    session = ort.InferenceSession(
        model.SerializeToString(),
        sess_options=ort_session_options(threads),
        providers=["CPUExecutionProvider"],
    )
    fn: Callable[[], Any] = functools.partial(session.run, None, {"a": a})
    what = f"onnxruntime {ort.__version__} MatMul fp32"
    onnx.checker.check_model(model)
    return fn, what


def _mindspore_gemm(a: np.ndarray, b: np.ndarray, threads: int) -> Tuple[Callable[[], Any], str]:
    """(call, description) in PyNative mode; the call copies the result back to NumPy, as every
    other library's result is in host memory."""
    import mindspore as ms
    from mindspore import ops

    ms.set_device("CPU")
    set_mindspore_threads(threads)
    ma, mb = ms.Tensor(a), ms.Tensor(b)

    def fn() -> Any:
        return ops.matmul(ma, mb).asnumpy()

    return fn, f"mindspore {ms.__version__} matmul fp32 (PyNative)"


def task_memplan(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One run's stages with their own peak RSS, against svd-run --plan (memplan.py)."""
    from .memplan import measure_stages

    return measure_stages(
        Path(spec["artifact_dir"]),
        spec["backend"],
        steps=spec.get("steps", 2),
        seed=spec.get("seed", 0),
    )


TASKS: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    "export": task_export,
    "plain_onnx": task_plain_onnx,
    "decode": task_decode,
    "train": task_train,
    "gemm": task_gemm,
    "memplan": task_memplan,
}


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    names = list(TASKS) + [f"serve-{k}" for k in SESSIONS]
    if len(args) != 3 or args[0] not in names:
        print(
            f"usage: python -m svdeploy.benchmarks.worker {{{','.join(names)}}} SPEC.json "
            "RESULT.json",
            file=sys.stderr,
        )
        return 2
    task, spec_path, result_path = args
    spec = json.loads(Path(spec_path).read_text())
    if task.startswith("serve-"):
        return serve(task[len("serve-") :], spec, Path(result_path))
    result = dict(TASKS[task](spec), peak_rss_vmhwm_bytes=peak_rss_of_this_process())
    write_json_atomic(Path(result_path), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
