"""The implementations compared by svd-bench, each behind the artifact's graph contract.

Every peer turns one graph (image_encoder, vae_encoder, unet, vae_decoder, vae_decoder_tail)
into ``run(inputs: name → float32 array) → float32 array`` with the same inputs and outputs,
so timings and outputs compare directly. Peers:

- ``diffusers``: diffusers / transformers modules, PyTorch eager on CPU, float32.
- ``diffusers-bf16``: the same under ``torch.autocast("cpu", torch.bfloat16)``.
- ``ms-pynative``: svdeploy's in-memory MindSpore network (the MindIR export's op variants) in
  PyNative mode.
- ``ms-graphcell``: the exported MindIR file through ``nn.GraphCell`` (svdeploy.runtime's
  ``mindspore`` backend loader).
- ``onnxruntime``: the exported ONNX file through ONNX Runtime (svdeploy.runtime's loader).
- ``openvino`` / ``openvino-bf16``: the same ONNX file through svdeploy.runtime's OpenVINO
  backend, INFERENCE_PRECISION_HINT f32 / bf16 (bf16 only on a CPU with native bf16).
- ``plain-onnx``: diffusers' own U-Net exported by ``torch.onnx.export`` (TorchScript exporter,
  opset 17) and run by ONNX Runtime: what a user gets without svdeploy. U-Net only.

Imports of torch / MindSpore / ONNX Runtime happen inside the functions: each worker process
loads only the library its peer needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from svdeploy.config import ModelConfig
from svdeploy.contract import graph_network
from svdeploy.fsutil import atomic_write_with

PEERS: Tuple[str, ...] = (
    "diffusers",
    "diffusers-bf16",
    "ms-pynative",
    "ms-graphcell",
    "onnxruntime",
    "openvino",
    "openvino-bf16",
    "plain-onnx",
    "lite",
)
DEFAULT_PEERS: Tuple[str, ...] = PEERS
PEER_LABELS: Dict[str, str] = {
    "diffusers": "diffusers eager (PyTorch CPU, fp32)",
    "diffusers-bf16": "diffusers eager, bf16 autocast",
    "ms-pynative": "svdeploy network, MindSpore PyNative",
    "ms-graphcell": "svdeploy MindIR, MindSpore GraphCell",
    "onnxruntime": "svdeploy ONNX, ONNX Runtime",
    "openvino": "svdeploy ONNX, OpenVINO fp32",
    "openvino-bf16": "svdeploy ONNX, OpenVINO bf16",
    "plain-onnx": "diffusers U-Net via torch.onnx, ONNX Runtime",
    "lite": "svdeploy Lite graphs (plain ONNX → Lite converter), MindSpore Lite CPU",
}
# Peers that need torch + diffusers; peers that need our exported files, and in which format.
TORCH_PEERS = ("diffusers", "diffusers-bf16", "plain-onnx")
ARTIFACT_FORMAT = {
    "ms-graphcell": "mindir",
    "onnxruntime": "onnx",
    "openvino": "onnx",
    "openvino-bf16": "onnx",
    "lite": "lite",
}
OPENVINO_PEERS = ("openvino", "openvino-bf16")
UNET_ONLY = ("plain-onnx",)

Runner = Callable[[Dict[str, np.ndarray]], np.ndarray]


def peer_precision(peer: str, dtype: str) -> str:
    """Compute precision of a peer: diffusers' are fixed; svdeploy's follow the export --dtype."""
    if peer in ("diffusers", "plain-onnx", "openvino"):
        return "fp32"
    if peer in ("diffusers-bf16", "openvino-bf16"):
        return "bf16"
    return dtype


def reference_peer(precision: str) -> str:
    """The diffusers peer a figure is compared with: same precision (fp16/bf16 → bf16)."""
    return "diffusers" if precision == "fp32" else "diffusers-bf16"


@dataclass
class PeerContext:
    """What a worker needs to build a peer."""

    cfg: ModelConfig
    frames: int
    height: int
    width: int
    guidance: bool
    decode_chunk_size: int
    dtype: str
    threads: int
    checkpoint_dir: Optional[Path]
    diffusers_dir: Optional[Path]
    artifact_dir: Optional[Path]
    plain_onnx_path: Optional[Path] = None
    conv: str = "native"  # svd-export --conv of the MindIR graphs

    @property
    def guidance_batch(self) -> int:
        return 2 if self.guidance else 1


# ---------------------------------------------------------------------------------------------
# diffusers (torch)
# ---------------------------------------------------------------------------------------------
def _torch_unet_module(unet: Any, frames: int) -> Any:
    """A torch module with the U-Net graph contract: flat batch-major (B·F, 8, h, w) sample."""
    import torch

    class UNetContract(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet = unet
            self.frames = frames

        def forward(self, sample: Any, c_noise: Any, context: Any, time_ids: Any) -> Any:
            batch = context.shape[0]
            v = self.unet(
                sample.reshape(batch, self.frames, *sample.shape[1:]),
                c_noise[0],
                encoder_hidden_states=context,
                added_time_ids=time_ids,
                return_dict=False,
            )[0]
            return v.reshape(batch * self.frames, *v.shape[2:])

    return UNetContract().eval()


def diffusers_graph_fns(nets: Dict[str, Any], frames: int) -> Dict[str, Callable[..., Any]]:
    """torch functions (keyword tensors → tensor) of each graph over diffusers' modules."""
    unet = _torch_unet_module(nets["unet"], frames)
    vae, clip = nets["vae"], nets["image_encoder"]
    return {
        "image_encoder": lambda pixel_values: clip(pixel_values).image_embeds[:, None],
        "vae_encoder": lambda image: vae.encode(image).latent_dist.mode(),
        "unet": lambda sample, c_noise, context, time_ids: unet(sample, c_noise, context, time_ids),
        "vae_decoder": lambda z: vae.decode(z, num_frames=z.shape[0]).sample,
        "vae_decoder_tail": lambda z: vae.decode(z, num_frames=z.shape[0]).sample,
    }


def _diffusers_runner(ctx: PeerContext, graph: str, bf16: bool) -> Tuple[Runner, Dict[str, Any]]:
    import torch

    from .weights import load_diffusers_networks

    if ctx.diffusers_dir is None:
        raise RuntimeError(
            "no diffusers folder (torch / diffusers unavailable when the weights were prepared)"
        )
    torch.set_num_threads(ctx.threads)
    nets = load_diffusers_networks(ctx.diffusers_dir, ctx.cfg)
    fn = diffusers_graph_fns(nets, ctx.frames)[graph]

    def run(inputs: Dict[str, np.ndarray]) -> np.ndarray:
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
        with torch.inference_mode():
            if bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = fn(**tensors)
            else:
                out = fn(**tensors)
        return out.float().numpy()

    return run, {
        "torch_threads": torch.get_num_threads(),
        "attention": "torch scaled_dot_product_attention (diffusers default)",
    }


# ---------------------------------------------------------------------------------------------
# plain ONNX: diffusers' U-Net through torch.onnx
# ---------------------------------------------------------------------------------------------
def export_plain_onnx(ctx: PeerContext, path: Path) -> Dict[str, Any]:
    """torch.onnx.export (TorchScript exporter, opset 17) of diffusers' U-Net with the graph
    contract's inputs; the dynamo exporter needs onnxscript, which is not installed offline."""
    import time

    import torch

    from .weights import load_diffusers_networks

    if ctx.diffusers_dir is None:
        raise RuntimeError("no diffusers folder to export")
    torch.set_num_threads(ctx.threads)
    nets = load_diffusers_networks(ctx.diffusers_dir, ctx.cfg)
    module = _torch_unet_module(nets["unet"], ctx.frames)
    factor = ctx.cfg.vae.downsample_factor
    h, w = ctx.height // factor, ctx.width // factor
    b, c, d = ctx.guidance_batch, ctx.cfg.latent_channels, ctx.cfg.unet.context_dim
    args = (
        torch.zeros(b * ctx.frames, 2 * c, h, w),
        torch.zeros(1),
        torch.zeros(b, 1, d),
        torch.zeros(b, 3),
    )
    started = time.perf_counter()
    import warnings

    def export(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about shape asserts
            torch.onnx.export(
                module,
                args,
                str(tmp),
                input_names=["sample", "c_noise", "context", "time_ids"],
                output_names=["v"],
                opset_version=17,
                dynamo=False,
            )

    atomic_write_with(path, export, suffix=".onnx", parents=True)
    return {
        "export_seconds": time.perf_counter() - started,
        "bytes": path.stat().st_size,
        "exporter": f"torch.onnx.export (TorchScript, opset 17), torch {torch.__version__}",
    }


def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    from .machine import ort_session_options

    return ort.InferenceSession(
        str(path), sess_options=ort_session_options(threads), providers=["CPUExecutionProvider"]
    )


def _plain_onnx_runner(ctx: PeerContext, graph: str) -> Tuple[Runner, Dict[str, Any]]:
    if graph != "unet":
        raise RuntimeError("plain-onnx exports diffusers' U-Net only")
    if ctx.plain_onnx_path is None or not ctx.plain_onnx_path.is_file():
        raise RuntimeError("the torch.onnx export of diffusers' U-Net is missing")
    session = _ort_session(ctx.plain_onnx_path, ctx.threads)
    names = [i.name for i in session.get_inputs()]

    def run(inputs: Dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, {n: inputs[n] for n in names})[0]

    return run, {"ort_intra_op_threads": ctx.threads}


def openvino_skip_reason(peer: str) -> Optional[str]:
    """Why an OpenVINO peer cannot run here (None when it can): the package, or for
    openvino-bf16 a CPU without native bf16 (OpenVINO would refuse or emulate it)."""
    from svdeploy.errors import BackendError
    from svdeploy.runtime.backends import OpenVINOBackend, import_backend

    try:
        ov = import_backend("openvino")
    except BackendError as exc:
        return str(exc)
    if peer == "openvino-bf16" and not OpenVINOBackend.has_bf16(ov.Core()):
        return "this CPU has no native bf16 (OpenVINO's CPU capabilities lack BF16)"
    return None


# ---------------------------------------------------------------------------------------------
# svdeploy: exported files through the runtime's loaders, and the in-memory network
# ---------------------------------------------------------------------------------------------
def _artifact_runner(
    ctx: PeerContext, graph: str, backend: str, precision: str = "fp32"
) -> Tuple[Runner, Dict[str, Any]]:
    from svdeploy.manifest import read_manifest
    from svdeploy.runtime.backends import BACKEND_FORMATS, CheckedGraph, graph_loader, load_graph

    if ctx.artifact_dir is None:
        raise RuntimeError("no exported artifact")
    fmt = BACKEND_FORMATS[backend]
    manifest = read_manifest(ctx.artifact_dir, verify_hashes=False, formats=[fmt])
    entry = manifest.graph(graph, fmt)
    info: Dict[str, Any] = {"file": entry.file, "graph_dtype": entry.dtype}
    if backend == "onnxruntime" and ctx.threads != os.cpu_count():
        # the runtime's loader takes ONNX Runtime's default thread count (all cores)
        session = _ort_session(ctx.artifact_dir / entry.file, ctx.threads)
        names = [s.name for s in entry.inputs]
        checked = CheckedGraph(
            entry, lambda x: session.run(None, {n: x[n] for n in names}), backend="onnxruntime"
        )
        info["session"] = f"bench-built, intra_op_num_threads={ctx.threads}"
    elif backend == "openvino":
        loader = graph_loader(backend, precision, threads=ctx.threads)
        checked = load_graph(entry, ctx.artifact_dir / entry.file, backend, manifest, loader)
        info["session"] = (
            f"svdeploy.runtime OpenVINOBackend, {precision}, INFERENCE_NUM_THREADS={ctx.threads}"
        )
    else:
        if backend == "mindspore":
            _mindspore_cpu()
        loader = None
        if backend == "lite":  # in process, or the worker of SVDEPLOY_LITE_PYTHON
            from svdeploy.runtime.lite import open_lite

            session = open_lite()
            info.update(lite_version=session.version, lite_where=session.where)
            loader = graph_loader(backend, lite_session=session)
        checked = load_graph(entry, ctx.artifact_dir / entry.file, backend, manifest, loader)
        info["session"] = "svdeploy.runtime.backends.load_graph"
    output = entry.outputs[0].name

    def run(inputs: Dict[str, np.ndarray]) -> np.ndarray:
        return checked(**inputs)[output]

    return run, info


def _mindspore_cpu(mode: str = "graph") -> None:
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    ms.set_device("CPU")


def build_ms_graph_cell(ctx: PeerContext, graph: str) -> Tuple[Any, Any]:
    """(export cell, kernel config): svdeploy's network loaded from the checkpoint, wrapped
    exactly as svd-export wraps it, with the MindIR export's op variants."""
    from svdeploy.export.api import export_kernels
    from svdeploy.export.cells import ImageEncoderGraph, UNetGraph, VAEDecoderGraph, VAEEncoderGraph
    from svdeploy.export.specs import resolve_settings
    from svdeploy.models.build import load_network

    if ctx.checkpoint_dir is None:
        raise RuntimeError("no svdeploy checkpoint")
    settings = resolve_settings(
        ctx.cfg,
        frames=ctx.frames,
        height=ctx.height,
        width=ctx.width,
        guidance=ctx.guidance,
        decode_chunk_size=ctx.decode_chunk_size,
        formats=("mindir",),
        dtype=ctx.dtype,
        conv=ctx.conv,
    )
    kernels = export_kernels("mindir", settings)
    network = graph_network(graph)
    net = load_network(network, ctx.checkpoint_dir, kernels, ctx.cfg)  # type: ignore[arg-type]
    net.set_train(False)
    if graph == "image_encoder":
        return ImageEncoderGraph(net), kernels
    if graph == "vae_encoder":
        return VAEEncoderGraph(net), kernels
    if graph == "unet":
        return UNetGraph(net, ctx.frames), kernels
    frames = ctx.decode_chunk_size if graph == "vae_decoder" else ctx.frames % ctx.decode_chunk_size
    return VAEDecoderGraph(net, frames), kernels


def _pynative_runner(
    ctx: PeerContext, graph: str, order: List[str]
) -> Tuple[Runner, Dict[str, Any]]:
    import mindspore as ms

    _mindspore_cpu("pynative")
    cell, kernels = build_ms_graph_cell(ctx, graph)

    def run(inputs: Dict[str, np.ndarray]) -> np.ndarray:
        out = cell(*[ms.Tensor(inputs[n]) for n in order])
        return out.asnumpy()

    return run, {"kernels": repr(kernels)}


def make_runner(
    peer: str, graph: str, ctx: PeerContext, input_order: List[str]
) -> Tuple[Runner, Dict[str, Any]]:
    """A ``run(inputs) → output`` for ``peer`` on ``graph``, and a description of its setup."""
    if peer not in PEERS:
        raise ValueError(f"peer {peer!r}: expected one of {', '.join(PEERS)}")
    if peer in ("diffusers", "diffusers-bf16"):
        return _diffusers_runner(ctx, graph, bf16=peer == "diffusers-bf16")
    if peer == "plain-onnx":
        return _plain_onnx_runner(ctx, graph)
    if peer == "ms-pynative":
        return _pynative_runner(ctx, graph, input_order)
    if peer in OPENVINO_PEERS:
        return _artifact_runner(ctx, graph, "openvino", peer_precision(peer, "fp32"))
    backend = {"ms-graphcell": "mindspore", "lite": "lite"}.get(peer, "onnxruntime")
    return _artifact_runner(ctx, graph, backend)


__all__ = [
    "PEERS",
    "DEFAULT_PEERS",
    "PEER_LABELS",
    "TORCH_PEERS",
    "ARTIFACT_FORMAT",
    "UNET_ONLY",
    "OPENVINO_PEERS",
    "openvino_skip_reason",
    "PeerContext",
    "make_runner",
    "peer_precision",
    "reference_peer",
    "diffusers_graph_fns",
    "export_plain_onnx",
    "build_ms_graph_cell",
]
