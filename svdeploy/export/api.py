"""``export_artifact``: trace the four SVD networks into static-shape graphs, check each
written graph against the in-memory network, and write a complete artifact directory.

The artifact is assembled in a hidden temporary sibling directory and renamed into place only
when every graph was written and validated, so a failed or killed export leaves nothing that
looks like an artifact.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from svdeploy import __version__
from svdeploy.config import ModelConfig
from svdeploy.contract import NETWORK_NAMES, relative_error
from svdeploy.errors import BackendError, CheckpointError, ExportError, InputError
from svdeploy.fsutil import (
    apply_umask,
    check_replaceable,
    raise_if_interrupted,
    remove_quietly,
    replace_dir,
    staged_dir,
)
from svdeploy.kernels.config import KernelConfig
from svdeploy.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    GraphEntry,
    Manifest,
    sha256_file,
    write_manifest,
)

from .specs import ExportSettings, GraphSpec, graph_specs, resolve_settings

PathLike = Union[str, os.PathLike]
LITE_SUFFIX = "_lite.mindir"  # what Lite's converter writes for output stem <stem>_lite


def export_kernels(fmt: str, settings: ExportSettings) -> KernelConfig:
    """The op variants traced into a graph of format ``fmt`` (``KernelConfig.for_export``)."""
    return KernelConfig.for_export(fmt, settings.target, settings.conv, settings.dtype)


# The float32 network every graph is checked against (KernelConfig.for_validation says why).
REFERENCE_KERNELS = KernelConfig.for_validation()
# The runtime backend that runs each written graph for validation: the one svd-run loads that
# format with (svdeploy.runtime.backends), so what is validated is what svd-run runs.
VALIDATION_BACKENDS: Dict[str, str] = {"onnx": "onnxruntime", "mindir": "mindspore", "lite": "lite"}
_BACKEND_LABELS: Dict[str, str] = {
    "onnxruntime": "ONNX Runtime",
    "mindspore": "MindSpore",
    "lite": "MindSpore Lite",
}


@dataclass
class GraphReport:
    name: str
    format: str
    file: str
    bytes: int
    export_seconds: float
    parity_max_rel_error: Optional[float]
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.parity_max_rel_error is None or self.parity_max_rel_error <= self.tolerance


@dataclass
class ExportResult:
    directory: Path
    manifest: Manifest
    reports: List[GraphReport] = field(default_factory=list)
    seconds: float = 0.0
    ascend_commands: Dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        rows = [f"{'graph':18s} {'format':6s} {'MB':>9s} {'export s':>9s} {'max rel err':>12s}"]
        for r in self.reports:
            err = "-" if r.parity_max_rel_error is None else f"{r.parity_max_rel_error:.2e}"
            rows.append(
                f"{r.name:18s} {r.format:6s} {r.bytes / 1e6:9.1f} {r.export_seconds:9.1f} "
                f"{err:>12s}"
            )
        return "\n".join(rows)


@dataclass
class _Validation:
    """How one written graph is checked: loaded under ``manifest`` (``_validation_manifest``)
    by the runtime's backend for its format, run on ``inputs``, its outputs compared with the
    reference network's ``wanted``."""

    manifest: Manifest
    inputs: List[np.ndarray]
    wanted: List[np.ndarray]


def _random_inputs(spec: GraphSpec, cfg: ModelConfig, rng: np.random.Generator) -> List[np.ndarray]:
    """Inputs in the ranges the runtime feeds (docs/NUMERICS.md §2, §3)."""
    arrays = []
    for t in spec.inputs:
        if t.name == "image":
            a = rng.uniform(-1.0, 1.0, t.shape)
        elif t.name == "c_noise":
            a = np.full(t.shape, 0.25 * np.log(rng.uniform(0.5, 20.0)))
        elif t.name == "time_ids":
            a = np.tile(np.array([[6.0, 127.0, 0.02]]), (t.shape[0], 1))
        elif t.name == "z":
            a = rng.standard_normal(t.shape) / cfg.vae.scale_factor
        else:
            a = rng.standard_normal(t.shape)
        arrays.append(a.astype(np.float32))
    return arrays


def _wrap(spec: GraphSpec, net):  # -> nn.Cell
    from .cells import ImageEncoderGraph, UNetGraph, VAEDecoderGraph, VAEEncoderGraph

    if spec.network == "image_encoder":
        return ImageEncoderGraph(net)
    if spec.network == "vae_encoder":
        return VAEEncoderGraph(net)
    if spec.network == "unet":
        return UNetGraph(net, spec.frames)
    return VAEDecoderGraph(net, spec.frames)


def _written_files(directory: Path, stem: str, fmt: str) -> Tuple[str, List[str]]:
    """(graph file, external weight files) that ms.export / the ONNX pass / Lite produced."""
    if fmt == "lite":
        return f"{stem}{LITE_SUFFIX}", []
    if fmt == "onnx":
        main = f"{stem}.onnx"
        data = f"{main}.data"
        return main, [data] if (directory / data).exists() else []
    if (directory / f"{stem}.mindir").exists():
        return f"{stem}.mindir", []
    # Above 1 GB of parameters MindSpore writes <stem>_graph.mindir + <stem>_variables/data_N.
    main = f"{stem}_graph.mindir"
    if not (directory / main).exists():
        raise ExportError(f"mindspore.export wrote no {stem}.mindir or {main} in {directory}")
    var_dir = directory / f"{stem}_variables"
    files = (
        sorted(str(p.relative_to(directory)) for p in var_dir.iterdir()) if var_dir.is_dir() else []
    )
    return main, files


def _load_network(name: str, cfg: ModelConfig, weights: Path, kernels: KernelConfig):
    from svdeploy.models.build import build_network
    from svdeploy.models.keys import NETWORK_PREFIXES
    from svdeploy.models.loading import load_into_cell

    net = build_network(name, cfg, kernels)  # type: ignore[arg-type]
    load_into_cell(net, weights, NETWORK_PREFIXES[name], strict=True)
    net.set_train(False)
    return net


def _share_parameters(target, source) -> None:
    """Give ``target`` the parameter values of ``source`` (same names by construction)."""
    values = dict(source.parameters_and_names())
    for name, param in target.parameters_and_names():
        param.set_data(values[name])


def export_artifact(
    checkpoint_dir: PathLike,
    out_dir: PathLike,
    *,
    frames: Optional[int] = None,
    height: Optional[int] = None,
    width: Optional[int] = None,
    guidance: bool = True,
    decode_chunk_size: Optional[int] = None,
    formats: Sequence[str] = ("mindir",),
    dtype: str = "fp32",
    target: str = "cpu",
    graphs: Optional[Sequence[str]] = None,
    validate: bool = True,
    overwrite: bool = False,
    seed: int = 0,
    conv: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = lambda _msg: None,
    lite_python: Optional[str] = None,
) -> ExportResult:
    """Export an svdeploy checkpoint directory (svd-convert / svd-train output) to ``out_dir``.
    ``lite_python`` (else ``SVDEPLOY_LITE_PYTHON``) names the interpreter whose MindSpore Lite
    converts and validates ``lite`` graphs when mindspore_lite does not import here."""
    from svdeploy.models.loading import read_checkpoint_dir, resolve_checkpoint_dir

    started = time.perf_counter()
    checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir)
    cfg, weights = read_checkpoint_dir(checkpoint_dir)
    settings = resolve_settings(
        cfg,
        frames=frames,
        height=height,
        width=width,
        guidance=guidance,
        decode_chunk_size=decode_chunk_size,
        formats=formats,
        dtype=dtype,
        target=target,
        graphs=graphs,
        validate=validate,
        seed=seed,
        conv=conv,
        lite_python=lite_python,
    )
    out = Path(out_dir)
    _check_out(out, Path(checkpoint_dir), overwrite)
    _check_finite_weights(weights)
    lite = _open_lite(settings)  # before any work: a missing Lite fails at once
    try:
        result = _export_and_publish(out, cfg, weights, settings, progress, log, lite)
    finally:
        if lite is not None:
            lite.close()
    result.directory = out
    result.seconds = time.perf_counter() - started
    return result


def _export_and_publish(
    out: Path,
    cfg: ModelConfig,
    weights: Path,
    settings: ExportSettings,
    progress: bool,
    log: Callable[[str], None],
    lite,
) -> ExportResult:
    """Export into a hidden folder beside ``out`` and swap it into place; on any failure the
    folder is removed and an earlier artifact stays as it was."""
    with staged_dir(out, ExportError, "artifact", "export to", repr(str(out)), log) as tmp:
        result = _export_into(tmp, cfg, weights, settings, progress, log, lite)
        apply_umask(tmp)
        _swap_into_place(tmp, out)
    return result


def _check_out(out: Path, checkpoint: Path, overwrite: bool) -> None:
    """Refuse an --out that is a file, holds the checkpoint or the current directory, or
    is not empty (without ``overwrite``), before any work."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {str(out)!r} exists and is not a directory")
    check_replaceable(out, {"--checkpoint": checkpoint})
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(
            f"--out {str(out)!r} exists and is not empty; pass --overwrite to replace it"
        )


def _check_finite_weights(weights: Path) -> None:
    """NaN / Inf weights (a diverged training run, a damaged file) would only show up as an
    infinite parity error after tracing; name the tensor at once instead."""
    from svdeploy.models.loading import first_non_finite

    bad = first_non_finite(weights)
    if bad is not None:
        raise CheckpointError(
            f"{str(weights)!r}: tensor {bad!r} holds NaN or Inf values; "
            "expected finite weights (a diverged training run or a damaged "
            "file?)"
        )


def _open_lite(settings: ExportSettings):
    if "lite" not in settings.formats:
        return None
    from svdeploy.errors import BackendError
    from svdeploy.runtime.lite import open_lite

    try:
        return open_lite(settings.lite_python)
    except BackendError as exc:
        raise ExportError(f"--format lite needs MindSpore Lite: {exc}") from None


@dataclass
class _Exported:
    """What the graphs written so far gave: manifest entries, parity reports, failures, and
    (for --target ascend) each graph's validation inputs and references."""

    entries: List[GraphEntry] = field(default_factory=list)
    reports: List[GraphReport] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)
    references: Dict[str, Tuple[List[np.ndarray], List[np.ndarray]]] = field(default_factory=dict)


def _export_into(
    tmp: Path,
    cfg: ModelConfig,
    weights: Path,
    settings: ExportSettings,
    progress: bool,
    log: Callable[[str], None],
    lite=None,
) -> ExportResult:
    """Every graph of every format into ``tmp`` (one network in memory at a time), each checked
    against the reference network; then the manifest (and the Ascend files)."""
    from tqdm import tqdm

    specs = graph_specs(cfg, settings)
    rng = np.random.default_rng(settings.seed)
    host = _validation_manifest(cfg, settings) if settings.validate else None
    done = _Exported()
    bar = tqdm(
        total=len(specs) * len(settings.formats),
        desc="export",
        unit="graph",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for network in dict.fromkeys(s.network for s in specs):
            net_specs = [s for s in specs if s.network == network]
            _export_network(
                tmp, network, net_specs, cfg, weights, settings, rng, host, lite, done, bar, log
            )
    finally:
        bar.close()
    if done.failures:
        raise ExportError(
            "exported graphs differ from the network beyond tolerance: " + "; ".join(done.failures)
        )
    manifest = _build_manifest(cfg, settings, done.entries)
    commands: Dict[str, str] = {}
    if settings.target == "ascend":
        commands = _write_ascend(tmp, manifest, done.entries, done.references, settings)
    write_manifest(manifest, tmp)
    return ExportResult(
        directory=tmp, manifest=manifest, reports=done.reports, ascend_commands=commands
    )


def _export_network(
    tmp: Path,
    network: str,
    net_specs: List[GraphSpec],
    cfg: ModelConfig,
    weights: Path,
    settings: ExportSettings,
    rng: np.random.Generator,
    host: Optional[Manifest],
    lite,
    done: _Exported,
    bar,
    log: Callable[[str], None],
) -> None:
    """One network's graphs in every format: the reference network's outputs first (one
    draw of inputs for all formats), then one traced network per format."""
    reference = (
        _load_network(network, cfg, weights, REFERENCE_KERNELS) if settings.validate else None
    )
    expected = _reference_outputs(net_specs, reference, cfg, rng) if reference is not None else {}
    if settings.target == "ascend":  # stored as the host validation's references
        done.references.update(expected)
    for fmt in settings.formats:
        kernels = export_kernels(fmt, settings)
        net = _network_to_trace(network, cfg, weights, kernels, reference)
        for spec in net_specs:
            bar.set_description(f"export {spec.name}.{fmt}")
            check = _Validation(host, *expected[spec.name]) if host is not None else None
            entry, report = _export_graph(tmp, spec, fmt, net, settings, kernels, check, lite)
            raise_if_interrupted()  # MindSpore's compiler may have eaten a Ctrl-C
            done.entries.append(entry)
            done.reports.append(report)
            done.failures.extend(_report_graph(report, log))
            bar.update(1)
        del net
        gc.collect()
    del reference
    gc.collect()


def _reference_outputs(
    net_specs: List[GraphSpec], reference, cfg: ModelConfig, rng: np.random.Generator
) -> Dict[str, Tuple[List[np.ndarray], List[np.ndarray]]]:
    """Per graph: random inputs (drawn from ``rng`` in graph order) and the reference
    network's outputs for them."""
    import mindspore as ms

    expected: Dict[str, Tuple[List[np.ndarray], List[np.ndarray]]] = {}
    for spec in net_specs:
        inputs = _random_inputs(spec, cfg, rng)
        out = _wrap(spec, reference)(*[ms.Tensor(a) for a in inputs])
        outs = out if isinstance(out, (tuple, list)) else [out]
        expected[spec.name] = (inputs, [o.asnumpy() for o in outs])
    return expected


def _network_to_trace(
    network: str, cfg: ModelConfig, weights: Path, kernels: KernelConfig, reference
):
    """The network with the format's kernels: sharing the reference's parameters when there
    is one (no second read of the weights), else loaded from ``weights``."""
    if reference is None:
        return _load_network(network, cfg, weights, kernels)
    from svdeploy.models.build import build_network

    net = build_network(network, cfg, kernels)  # type: ignore[arg-type]
    _share_parameters(net, reference)
    net.set_train(False)
    return net


def _report_graph(report: GraphReport, log: Callable[[str], None]) -> List[str]:
    """Logs one written graph; returns its parity failure, if any, as a one-item list."""
    err = "-" if report.parity_max_rel_error is None else f"{report.parity_max_rel_error:.2e}"
    log(
        f"{report.name}.{report.format}: {report.bytes / 1e6:.1f} MB in "
        f"{report.export_seconds:.1f} s, max rel err {err}"
    )
    if report.passed:
        return []
    return [
        f"{report.name}.{report.format}: max relative error "
        f"{report.parity_max_rel_error:.3e} > tolerance {report.tolerance:.0e}"
    ]


def _write_ascend(
    tmp: Path,
    manifest: Manifest,
    entries: List[GraphEntry],
    references: Dict[str, Tuple[List[np.ndarray], List[np.ndarray]]],
    settings: ExportSettings,
) -> Dict[str, str]:
    """Converter configs and commands, the MindSpore → Lite version pairing, and (with
    validation) reference outputs plus the host validation command."""
    import mindspore as ms

    import svdeploy.export.ascend as ascend
    from svdeploy.runtime.lite import WORKER_PATH

    mindir = [e for e in entries if e.format == "mindir"]
    commands = ascend.write_ascend_files(tmp, mindir, settings.dtype, ms.__version__)
    manifest.extra["ascend_commands"] = commands
    manifest.extra["ascend_version_pairing"] = ascend.version_pairing(ms.__version__)
    if references and mindir:
        tolerance = max(settings.tolerance, 1e-3)  # Ascend kernels (enforce_fp32 or fp16)
        manifest.extra["reference_outputs"] = ascend.write_reference_outputs(
            tmp, mindir, references, tolerance
        )
        manifest.extra["ascend_validate_command"] = ascend.write_validation_files(
            tmp, WORKER_PATH, tolerance
        )
    return commands


def _export_graph(
    tmp: Path,
    spec: GraphSpec,
    fmt: str,
    net,
    settings: ExportSettings,
    kernels: KernelConfig,
    check: Optional[_Validation],
    lite=None,
) -> Tuple[GraphEntry, GraphReport]:
    """Write one graph, build its manifest entry and (with ``check``) validate it."""
    started = time.perf_counter()
    if fmt == "lite":
        _write_lite_graph(tmp, spec, net, lite)
    else:
        _trace(tmp / spec.file_stem, spec, fmt, net)
    seconds = time.perf_counter() - started
    main, external = _written_files(tmp, spec.file_stem, fmt)
    entry = _graph_entry(tmp, spec, fmt, main, external, settings, kernels, seconds, lite)
    if check is not None:
        entry.parity_max_rel_error = _parity_error(tmp, entry, check, lite)
    size = (tmp / main).stat().st_size + sum((tmp / f).stat().st_size for f in external)
    report = GraphReport(
        spec.name, fmt, main, size, seconds, entry.parity_max_rel_error, settings.tolerance
    )
    return entry, report


def _graph_entry(
    tmp: Path,
    spec: GraphSpec,
    fmt: str,
    main: str,
    external: List[str],
    settings: ExportSettings,
    kernels: KernelConfig,
    seconds: float,
    lite,
) -> GraphEntry:
    """The manifest entry of a written graph (its parity error is set by validation)."""
    extra: Dict[str, object] = {"frames": spec.frames} if spec.frames else {}
    extra["kernels"] = asdict(kernels)  # the op variants traced, for provenance
    if fmt == "lite":
        extra.update(
            lite_version=lite.version,
            converted_from="onnx",
            converter="mindspore_lite.Converter(FmkType.ONNX)",
        )
    if external:
        extra["external_files"] = [{"file": f, "sha256": sha256_file(tmp / f)} for f in external]
    return GraphEntry(
        name=spec.name,
        format=fmt,
        file=main,
        inputs=list(spec.inputs),
        outputs=list(spec.outputs),
        sha256=sha256_file(tmp / main),
        parity_max_rel_error=None,
        parity_tolerance=settings.tolerance,
        export_seconds=round(seconds, 3),
        dtype=settings.dtype,
        extra=extra,
    )


def _validation_manifest(cfg: ModelConfig, settings: ExportSettings) -> Manifest:
    """The manifest the written graphs are loaded under for validation: the artifact's own
    before its graphs are known, with target cpu, as validation runs them on this host (an
    Ascend artifact's graphs are checked on the Ascend host: ``ascend_validate_command``)."""
    return replace(_build_manifest(cfg, settings, []), target="cpu")


def _parity_error(tmp: Path, entry: GraphEntry, check: _Validation, lite) -> float:
    """Max relative error of the written graph's outputs, as svd-run gets them, against the
    reference network's."""
    got = _run_as_svd_run(tmp, entry, check.manifest, check.inputs, lite)
    if len(got) != len(check.wanted):
        raise ExportError(f"{entry.file}: {len(got)} outputs, the network has {len(check.wanted)}")
    try:
        return max(relative_error(g, w) for g, w in zip(got, check.wanted))
    except ValueError as exc:  # a shape mismatch
        raise ExportError(f"{entry.file}: {exc} (the in-memory network's)") from None


def _run_as_svd_run(
    tmp: Path, entry: GraphEntry, manifest: Manifest, inputs: Sequence[np.ndarray], lite
) -> List[np.ndarray]:
    """The written graph's outputs as svd-run gets them: loaded by the runtime's backend for
    its format (``runtime.backends.load_graph``: the same loader, the same checks of the file
    against ``entry``) and run through the CheckedGraph that holds every input and output to
    ``entry``'s names, shapes and dtypes; then freed (a Lite graph leaves its session)."""
    from svdeploy.runtime.backends import backend_importable, graph_loader, load_graph

    backend = VALIDATION_BACKENDS[entry.format]
    if backend == "onnxruntime" and not backend_importable(backend):
        raise ExportError(
            "validating ONNX graphs needs onnxruntime (pip install "
            "'svdeploy[onnx]'), or pass --no-validate"
        )
    try:
        graph = load_graph(
            entry, tmp / entry.file, backend, manifest, graph_loader(backend, lite_session=lite)
        )
        try:
            outputs = graph(**dict(zip((s.name for s in entry.inputs), inputs)))
        finally:
            graph.close()
    except (BackendError, InputError) as exc:
        raise _validation_error(entry.file, backend, exc) from None
    return [outputs[s.name] for s in entry.outputs]


def _validation_error(file: str, backend: str, exc: Exception) -> ExportError:
    """One line naming the graph and the backend. A MindSpore error (the runtime keeps it as
    the cause) of a MindIR graph says how to export a graph this host cannot run."""
    cause = exc.__cause__
    if backend == "mindspore" and cause is not None:
        # e.g. a bf16 MindIR on CPU: MindSpore 2.10's CPU backend has no bf16 Transpose
        first = next(
            (ln.strip(" -") for ln in str(cause).splitlines() if ln.strip(" -")),
            type(cause).__name__,
        )
        return ExportError(
            f"validating {file} with MindSpore failed: {first} (bf16 MindIR "
            "graphs run where MindSpore has bf16 kernels, e.g. Ascend; export "
            "them with --no-validate)"
        )
    return ExportError(f"validating {file} with {_BACKEND_LABELS[backend]} failed: {exc}")


def _trace(stem: Path, spec: GraphSpec, fmt: str, net, for_lite: bool = False) -> None:
    """ms.export ``net`` to ``stem``.onnx / .mindir (ONNX then rewritten by onnx_passes).
    ``for_lite``: plain ONNX that MindSpore Lite 2.0's converter takes: no com.microsoft
    attention (refused) and the temporal convolutions' frame padding left as a Concat (with
    the padding folded into the Conv, Lite 2.0.0 converted the tiny VAE decoder but could not
    build the result for the CPU: "build_from_file failed")."""
    import mindspore as ms

    cell = _wrap(spec, net)
    dummy = [ms.Tensor(np.zeros(t.shape, np.float32)) for t in spec.inputs]
    try:
        ms.export(
            cell, *dummy, file_name=str(stem), file_format="ONNX" if fmt == "onnx" else "MINDIR"
        )
    except (RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"mindspore.export of {spec.name} as {fmt} failed: {first}") from exc
    if fmt == "onnx":
        from .onnx_passes import rewrite_onnx

        rewrite_onnx(
            stem.with_name(stem.name + ".onnx"),
            [t.name for t in spec.inputs],
            [t.name for t in spec.outputs],
            for_lite=for_lite,
        )


def _write_lite_graph(tmp: Path, spec: GraphSpec, net, lite) -> None:
    """Plain ONNX (no com.microsoft ops, which Lite refuses; Resize modes written out, which
    Lite 2.0 would otherwise read as linear) → Lite's converter → ``<stem>_lite.mindir``."""
    from svdeploy.errors import BackendError

    source = tmp / ".lite-source"
    source.mkdir(exist_ok=True)
    try:
        _trace(source / spec.file_stem, spec, "onnx", net, for_lite=True)
        lite.convert(source / f"{spec.file_stem}.onnx", tmp / f"{spec.file_stem}_lite")
    except BackendError as exc:
        raise ExportError(f"converting {spec.name} with MindSpore Lite failed: {exc}") from None
    finally:
        remove_quietly(source)


def _build_manifest(cfg: ModelConfig, s: ExportSettings, entries: List[GraphEntry]) -> Manifest:
    f = cfg.vae.downsample_factor
    sampling = cfg.sampling
    return Manifest(
        format_version=FORMAT_VERSION,
        toolkit_version=__version__,
        variant=cfg.variant,
        height=s.height,
        width=s.width,
        num_frames=s.num_frames,
        latent_shape=(s.num_frames, cfg.latent_channels, s.height // f, s.width // f),
        cfg=s.cfg,
        guidance_batch=s.guidance_batch,
        decode_chunk_size=s.decode_chunk_size,
        dtype=s.dtype,
        target=s.target,
        scheduler={
            "sigma_min": cfg.scheduler.sigma_min,
            "sigma_max": cfg.scheduler.sigma_max,
            "rho": cfg.scheduler.rho,
            "scaling_factor": cfg.vae.scale_factor,
        },
        defaults={
            "fps": sampling.fps,
            "motion_bucket_id": sampling.motion_bucket_id,
            "noise_aug_strength": sampling.noise_aug_strength,
            "min_guidance_scale": sampling.min_guidance_scale,
            "max_guidance_scale": sampling.max_guidance_scale if s.cfg else 1.0,
            "num_inference_steps": sampling.num_inference_steps,
        },
        graphs=entries,
        extra={
            "validated": s.validate,
            # an export of a subset of the networks (e.g. --graph unet) cannot be run
            "partial": set(s.graphs) != set(NETWORK_NAMES),
            # --conv auto: the probe convolution's seconds per call that chose the kernel
            "conv_probe_seconds": dict(s.conv_probe),
        },
    )


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished temporary directory to ``out`` (replacing an old one last)."""
    if not (tmp / MANIFEST_NAME).is_file():  # pragma: no cover - defensive
        raise ExportError("internal error: the export has no manifest")
    replace_dir(tmp, out)


__all__ = [
    "export_artifact",
    "ExportResult",
    "GraphReport",
    "relative_error",
    "export_kernels",
    "REFERENCE_KERNELS",
]
