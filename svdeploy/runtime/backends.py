"""Graph backends and the manifest-checked graph wrapper.

A backend turns one graph file of the artifact into a callable ``run(inputs) -> outputs``
(inputs: name → float32 array in manifest order; outputs: arrays in manifest order).
``CheckedGraph`` wraps any such callable, so every call is checked by name, shape and dtype
against the manifest and timed. Backend libraries are imported only when chosen:

- ``onnxruntime``: the ONNX graphs, CPU (or CUDA when that provider is installed).
- ``mindspore``: the MindIR graphs through ``mindspore.load`` + ``nn.GraphCell``; the device
  and mode are whatever MindSpore's context holds (the CLI leaves MindSpore's defaults).
- ``openvino``: the ONNX graphs through OpenVINO's CPU plugin (it reads the
  ``com.microsoft`` attention nodes too), in float32 or bfloat16 (``precision``); compiled
  models are cached on disk (``openvino_cache_dir``), so a second start skips compilation.
- ``lite``: the ``lite`` graphs (converted by MindSpore Lite at export) through MindSpore Lite,
  in process or through ``lite_worker.py`` in another interpreter (``lite.py``); an artifact
  without lite graphs (``--target ascend``, converted on the host) runs its MindIR graphs.
"""

from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from svdeploy.contract import required_graphs
from svdeploy.errors import BackendError, InputError, ManifestError
from svdeploy.manifest import GraphEntry, Manifest, read_manifest, require_complete

# Graph file format each backend runs.
BACKEND_FORMATS: Dict[str, str] = {
    "onnxruntime": "onnx",
    "mindspore": "mindir",
    "lite": "lite",
    "openvino": "onnx",
}
# Formats a backend can run, preferred first: Lite also reads MindIR from a MindSpore no newer
# than itself (an Ascend artifact's graphs before or after converter_lite).
_RUNNABLE_FORMATS: Dict[str, Tuple[str, ...]] = {"lite": ("lite", "mindir")}
BACKENDS: Tuple[str, ...] = tuple(BACKEND_FORMATS)
# Order of the automatic choice: the first backend whose graphs the artifact holds and whose
# library imports. Measured by svd-bench on CPU (benchmarks/README.md): OpenVINO beats ONNX
# Runtime on the same .onnx files (fp32 and, far more, bf16), ONNX Runtime beats MindSpore.
BACKEND_PREFERENCE: Tuple[str, ...] = ("openvino", "onnxruntime", "mindspore", "lite")
_BACKEND_MODULES: Dict[str, str] = {
    "onnxruntime": "onnxruntime",
    "mindspore": "mindspore",
    "lite": "mindspore_lite",
    "openvino": "openvino",
}
_INSTALL_HINTS: Dict[str, str] = {
    "onnxruntime": "install it with `pip install onnxruntime` (or svdeploy[onnx])",
    "openvino": "install it with `pip install openvino` (or svdeploy[openvino])",
    "mindspore": "install it with `pip install mindspore`",
    "lite": "MindSpore Lite publishes wheels only for some Python versions (mindspore-lite "
    "2.0.0: CPython 3.7); name an interpreter that has it with --lite-python or "
    "SVDEPLOY_LITE_PYTHON, or choose --backend mindspore or onnxruntime",
}


def first_line(exc: BaseException) -> str:
    """A backend exception as one line: MindSpore appends a multi-line C++ stack."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


GraphOutputs = Union[Mapping[str, np.ndarray], Sequence[np.ndarray], np.ndarray]
GraphFn = Callable[[Dict[str, np.ndarray]], GraphOutputs]


# ---------------------------------------------------------------------------------------------
# The checked wrapper
# ---------------------------------------------------------------------------------------------
class CheckedGraph:
    """A graph callable that enforces its manifest entry on every call and keeps timings.

    Call it with keyword arrays, ``graph(sample=..., c_noise=...)``; it returns a dict of the
    outputs by manifest name.
    """

    def __init__(self, entry: GraphEntry, run: GraphFn, backend: str = "injected") -> None:
        self.entry = entry
        self.backend = backend
        self._run = run
        self.calls = 0
        self.seconds = 0.0

    @property
    def name(self) -> str:
        return self.entry.name

    def check_inputs(self, inputs: Mapping[str, Any]) -> Dict[str, np.ndarray]:
        expected = [s.name for s in self.entry.inputs]
        missing = [n for n in expected if n not in inputs]
        unexpected = sorted(n for n in inputs if n not in expected)
        if missing or unexpected:
            parts = []
            if missing:
                parts.append("missing " + ", ".join(repr(n) for n in missing))
            if unexpected:
                parts.append("unexpected " + ", ".join(repr(n) for n in unexpected))
            raise InputError(
                f"graph {self.name!r}: {'; '.join(parts)} input(s); expected exactly "
                f"{', '.join(expected)}"
            )
        ordered: Dict[str, np.ndarray] = {}
        for spec in self.entry.inputs:
            value = inputs[spec.name]
            if not isinstance(value, np.ndarray):
                raise InputError(
                    f"graph {self.name!r} input {spec.name!r}: got "
                    f"{type(value).__name__}, expected a numpy array"
                )
            if value.dtype != np.dtype(spec.dtype):
                raise InputError(
                    f"graph {self.name!r} input {spec.name!r}: dtype {value.dtype}, "
                    f"expected {spec.dtype}"
                )
            if tuple(value.shape) != tuple(spec.shape):
                raise InputError(
                    f"graph {self.name!r} input {spec.name!r}: shape "
                    f"{tuple(value.shape)}, expected {tuple(spec.shape)}"
                )
            ordered[spec.name] = np.ascontiguousarray(value)
        return ordered

    def check_outputs(self, raw: GraphOutputs) -> Dict[str, np.ndarray]:
        specs = self.entry.outputs
        if isinstance(raw, Mapping):
            missing = [s.name for s in specs if s.name not in raw]
            if missing:
                raise BackendError(
                    f"graph {self.name!r} returned outputs {sorted(raw)}; expected "
                    f"{', '.join(s.name for s in specs)}"
                )
            values = [raw[s.name] for s in specs]
        else:
            values = [raw] if isinstance(raw, np.ndarray) else list(raw)
            if len(values) != len(specs):
                raise BackendError(
                    f"graph {self.name!r} returned {len(values)} outputs; the manifest "
                    f"lists {len(specs)} ({', '.join(s.name for s in specs)})"
                )
        result: Dict[str, np.ndarray] = {}
        for spec, value in zip(specs, values):
            value = np.asarray(value)
            if tuple(value.shape) != tuple(spec.shape) or value.dtype != np.dtype(spec.dtype):
                raise BackendError(
                    f"graph {self.name!r} output {spec.name!r}: got {value.dtype} "
                    f"{tuple(value.shape)}, the manifest records {spec.dtype} "
                    f"{tuple(spec.shape)}"
                )
            result[spec.name] = value
        return result

    def close(self) -> None:
        """Free what the backend holds for this graph where it can (a Lite graph in its
        session); export validation loads each graph once. The graph is not called again."""
        close = getattr(self._run, "close", None)
        if close is not None:
            close()

    @staticmethod
    def _shapes(inputs: Mapping[str, np.ndarray]) -> str:
        return ", ".join(f"{k} {tuple(v.shape)}" for k, v in inputs.items())

    def __call__(self, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        ordered = self.check_inputs(inputs)
        start = time.perf_counter()
        try:
            raw = self._run(ordered)
        except (InputError, ManifestError, BackendError):
            raise
        except Exception as exc:  # a backend's own error: name the graph and the backend
            raise BackendError(
                f"graph {self.name!r} failed in backend {self.backend!r} on inputs "
                f"{self._shapes(ordered)} (the manifest's shapes): "
                f"{first_line(exc)}"
            ) from exc
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1
        return self.check_outputs(raw)


# ---------------------------------------------------------------------------------------------
# Choosing a backend
# ---------------------------------------------------------------------------------------------
def import_backend(backend: str) -> Any:
    """Import the library of ``backend`` or raise a BackendError saying how to get it."""
    if backend not in BACKEND_FORMATS:
        raise BackendError(f"backend {backend!r} is unknown; expected one of {', '.join(BACKENDS)}")
    module = _BACKEND_MODULES[backend]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(
            f"backend {backend!r} needs the Python package {module!r}, which is not "
            f"installed or does not import ({exc}); {_INSTALL_HINTS[backend]}"
        ) from None


def backend_importable(backend: str) -> bool:
    try:
        import_backend(backend)
    except BackendError:
        return False
    return True


def backend_preference(manifest: Manifest) -> Tuple[str, ...]:
    """Fastest first, as measured by svd-bench on each platform: on a CPU, ONNX Runtime beats
    MindSpore's GraphCell (svdeploy/benchmarks/README.md); an artifact exported for Ascend runs on
    the NPU only through MindSpore Lite, so there Lite comes first."""
    if manifest.target == "ascend":
        return ("lite",) + tuple(b for b in BACKEND_PREFERENCE if b != "lite")
    return BACKEND_PREFERENCE


def runnable_format(backend: str, formats: Sequence[str]) -> Optional[str]:
    """The format of ``formats`` that ``backend`` runs (its preferred one first), or None."""
    for fmt in _RUNNABLE_FORMATS.get(backend, (BACKEND_FORMATS[backend],)):
        if fmt in formats:
            return fmt
    return None


def _available(backend: str, lite_python: Optional[str]) -> bool:
    if backend == "lite":
        from .lite import lite_importable, resolve_lite_python

        return resolve_lite_python(lite_python) is not None or lite_importable()
    return backend_importable(backend)


def choose_backend(
    manifest: Manifest, requested: Optional[str] = None, lite_python: Optional[str] = None
) -> str:
    """The requested backend after checking it can run this artifact, or the first of
    ``BACKEND_PREFERENCE`` that the artifact's formats and this machine allow. Lite counts as
    available when ``mindspore_lite`` imports here or an interpreter is named for it."""
    formats = manifest.formats()
    if requested is not None:
        if requested not in BACKEND_FORMATS:
            raise BackendError(
                f"backend {requested!r} is unknown; expected one of {', '.join(BACKENDS)}"
            )
        if runnable_format(requested, formats) is None:
            usable = [b for b in BACKENDS if runnable_format(b, formats)]
            wanted = "/".join(_RUNNABLE_FORMATS.get(requested, (BACKEND_FORMATS[requested],)))
            raise BackendError(
                f"backend {requested!r} runs {wanted} graphs, but the artifact "
                f"holds only {', '.join(formats)} graphs; use one of "
                f"{', '.join(usable)}"
            )
        if requested != "lite":  # Lite is opened (in process or in a worker) at load
            import_backend(requested)
        return requested
    for backend in backend_preference(manifest):
        if runnable_format(backend, formats) and _available(backend, lite_python):
            return backend
    raise BackendError(
        f"no installed backend can run this artifact ({', '.join(formats)} graphs); "
        "install onnxruntime (for onnx) or mindspore (for mindir), or name a "
        "MindSpore Lite interpreter with --lite-python (for lite)"
    )


# ---------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------
PRECISIONS: Tuple[str, ...] = ("fp32", "bf16", "auto")


def _graph_precision(manifest: Manifest) -> str:
    """The compute precision baked into the artifact's graphs (svd-export --dtype)."""
    return manifest.dtype


def resolve_precision(backend: str, manifest: Manifest, precision: Optional[str] = None) -> str:
    """The precision ``backend`` will run this artifact in: ``fp32`` or ``bf16`` (or the
    graphs' own ``fp16``). ``auto`` (and None) is each backend's measured best:

    - ``openvino`` runs fp32 (``OpenVINOBackend.resolve`` says why bf16 is not the default);
    - ``onnxruntime`` runs the graphs as exported (fp32; svd-export writes no bf16 ONNX);
    - ``mindspore`` / ``lite`` run the MindIR graphs in the dtype they were exported with.

    A precision a backend cannot give raises a BackendError saying which backend can."""
    precision = "auto" if precision is None else precision
    if precision not in PRECISIONS:
        raise InputError(
            f"precision {precision!r} is unknown; expected one of {', '.join(PRECISIONS)}"
        )
    if backend == "openvino":
        if _graph_precision(manifest) != "fp32":
            raise BackendError(
                f"backend 'openvino' runs fp32 ONNX graphs; this artifact's graphs "
                f"are {_graph_precision(manifest)}"
            )
        return OpenVINOBackend.resolve(precision)
    baked = _graph_precision(manifest)
    if precision in ("auto", baked):
        return baked
    if backend == "onnxruntime":
        raise BackendError(
            f"backend 'onnxruntime' cannot run precision {precision!r}: ONNX Runtime's "
            "CPU provider runs svdeploy's ONNX graphs in float32 only; use "
            "--backend openvino for bf16 on a CPU with native bf16"
        )
    raise BackendError(
        f"backend {backend!r} runs the MindIR graphs in the precision they were "
        f"exported with ({baked}), not {precision!r}; re-export with svd-export "
        f"--dtype {precision} --format mindir, or use --backend openvino"
    )


# ---------------------------------------------------------------------------------------------
# Loaders, one per backend
# ---------------------------------------------------------------------------------------------
def _as_output_list(outputs: Any) -> List[Any]:
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


def _load_onnxruntime(entry: GraphEntry, path: Path, manifest: Manifest) -> GraphFn:
    ort = import_backend("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: keeps the progress bar readable
    wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
    providers = [p for p in ort.get_available_providers() if p in wanted] or None
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    graph_inputs = {i.name: i for i in session.get_inputs()}
    expected = [s.name for s in entry.inputs]
    if sorted(graph_inputs) != sorted(expected):
        # Inputs are fed by name, so a graph with other names cannot be run safely.
        raise BackendError(
            f"{path.name}: the ONNX graph's inputs are {sorted(graph_inputs)}, the "
            f"manifest lists {expected}"
        )
    for spec in entry.inputs:
        dims = graph_inputs[spec.name].shape
        static = [d if isinstance(d, int) else None for d in dims]
        if len(static) != len(spec.shape) or any(
            d is not None and d != s for d, s in zip(static, spec.shape)
        ):
            raise BackendError(
                f"{path.name}: ONNX input {spec.name!r} has shape {list(dims)}, the "
                f"manifest records {list(spec.shape)}"
            )
    if len(session.get_outputs()) != len(entry.outputs):
        raise BackendError(
            f"{path.name}: the ONNX graph has {len(session.get_outputs())} outputs, "
            f"the manifest lists {len(entry.outputs)}"
        )

    def run(inputs: Dict[str, np.ndarray]) -> List[np.ndarray]:
        # Outputs are taken by position: exporters name them freely.
        return session.run(None, inputs)

    return run


def _load_mindspore(entry: GraphEntry, path: Path, manifest: Manifest) -> GraphFn:
    ms = import_backend("mindspore")
    cell = ms.nn.GraphCell(ms.load(str(path)))
    names = [s.name for s in entry.inputs]

    def run(inputs: Dict[str, np.ndarray]) -> List[np.ndarray]:
        # A MindIR graph takes its inputs by position, in the manifest's order.
        outputs = cell(*[ms.Tensor(inputs[n]) for n in names])
        return [o.asnumpy() for o in _as_output_list(outputs)]

    return run


def _version_tuple(version: str) -> Tuple[int, ...]:
    parts = []
    for part in str(version).split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _load_lite(entry: GraphEntry, path: Path, manifest: Manifest, session: Any) -> GraphFn:
    converted_by = entry.extra.get("lite_version")
    if converted_by and _version_tuple(session.version) < _version_tuple(converted_by):
        raise BackendError(
            f"{path.name} was converted by MindSpore Lite {converted_by}; the Lite "
            f"here ({session.where}) is {session.version}, which may not read it: "
            f"use a Lite ≥ {converted_by}"
        )
    target = "ascend" if manifest.target.lower() == "ascend" else "cpu"
    graph = session.load(path, target)
    names = [s.name for s in entry.inputs]
    if len(graph.inputs) != len(names):
        session.unload(graph)
        raise BackendError(
            f"{path.name}: the Lite graph takes {len(graph.inputs)} inputs, the "
            f"manifest lists {len(names)} ({', '.join(names)})"
        )
    return _LiteRun(session, graph, names)


class _LiteRun:
    """A loaded Lite graph as a GraphFn; ``close`` frees it in its session."""

    def __init__(self, session: Any, graph: Any, names: List[str]) -> None:
        self.session = session
        self.graph = graph
        self.names = names

    def __call__(self, inputs: Dict[str, np.ndarray]) -> List[np.ndarray]:
        # A Lite graph takes its inputs by position, in the manifest's order.
        return self.graph.run([inputs[n] for n in self.names])

    def close(self) -> None:
        self.session.unload(self.graph)


def openvino_cache_dir() -> Optional[Path]:
    """Where OpenVINO keeps compiled models: ``$SVDEPLOY_OPENVINO_CACHE`` (empty: no cache),
    else ``$XDG_CACHE_HOME/svdeploy/openvino``, else ``~/.cache/svdeploy/openvino``. A user
    cache, not the artifact folder: artifacts may be read-only or shared between machines,
    and a compiled blob belongs to one CPU and one OpenVINO version (OpenVINO's cache key
    holds the model, the device, its properties and the OpenVINO version)."""
    if "SVDEPLOY_OPENVINO_CACHE" in os.environ:
        value = os.environ["SVDEPLOY_OPENVINO_CACHE"]
        return Path(value).expanduser() if value else None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "svdeploy" / "openvino"


class OpenVINOBackend:
    """The artifact's ONNX graphs through OpenVINO's CPU plugin, one ``ov.Core`` per artifact.

    ``precision`` is ``fp32`` or ``bf16`` and is always set explicitly: left alone, the CPU
    plugin runs bf16 wherever the CPU has native bf16 (INFERENCE_PRECISION_HINT's default
    there), which would break fp32 parity silently. ``threads`` (None: OpenVINO's default, all
    cores) sets INFERENCE_NUM_THREADS; the LATENCY hint gives one stream for one request."""

    def __init__(
        self,
        precision: str = "fp32",
        cache_dir: Optional[Path] = None,
        threads: Optional[int] = None,
    ) -> None:
        if precision not in ("fp32", "bf16"):
            raise BackendError(f"backend 'openvino' runs fp32 or bf16, not {precision!r}")
        self.ov = import_backend("openvino")
        self.core = self.ov.Core()
        if precision == "bf16" and not self.has_bf16(self.core):
            raise BackendError(self._no_bf16_message(self.core))
        self.precision = precision
        self.cache_dir = self._usable_cache(cache_dir)
        self.threads = threads
        self.loaded_from_cache: Dict[str, bool] = {}  # graph file → compiled model came from cache

    # -- precision --------------------------------------------------------------------------
    @staticmethod
    def cpu_capabilities(core: Any) -> List[str]:
        return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]

    @classmethod
    def has_bf16(cls, core: Any) -> bool:
        return "BF16" in cls.cpu_capabilities(core)

    @classmethod
    def _no_bf16_message(cls, core: Any) -> str:
        return (
            "precision 'bf16' needs a CPU with native bf16 arithmetic (AVX512_BF16 or AMX); "
            "OpenVINO reports this CPU's capabilities as "
            f"{', '.join(cls.cpu_capabilities(core)) or 'none'}; use --precision fp32 (or auto)"
        )

    @classmethod
    def resolve(cls, precision: str) -> str:
        """``auto`` → fp32. Measured (benchmarks/README.md): bf16 runs the U-Net 1.3–2.7×
        faster (1.9× on a quiet Zen 4), and on the mid U-Net and whole video its error against
        diffusers fp32 equals diffusers' own bf16 autocast (1.2e-2 / 7e-3 rel. L2). But on one
        CPU (an EPYC of family 26) the tiny U-Net came out at 0.21 (diffusers bf16: 1.8e-2),
        where a family-25 EPYC gives 1.9e-2 on the same file. A default must not depend on
        which CPU a user has, so bf16 is a choice the user makes. An explicit bf16 is checked
        against the CPU here."""
        if precision in ("fp32", "auto"):
            return "fp32"
        core = import_backend("openvino").Core()
        if not cls.has_bf16(core):
            raise BackendError(cls._no_bf16_message(core))
        return "bf16"

    # -- compilation -------------------------------------------------------------------------
    @staticmethod
    def _usable_cache(cache_dir: Optional[Path]) -> Optional[Path]:
        """The cache folder, created; None (compile every time) when it cannot be written."""
        if cache_dir is None:
            return None
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        return cache_dir if os.access(cache_dir, os.W_OK) else None

    def config(self) -> Dict[str, Any]:
        config: Dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.cache_dir is not None:
            # one folder per precision: a blob compiled for f32, loaded from the cache with the
            # bf16 hint, ran in f32 (seen in the test suite: bf16 frames then equal fp32's)
            config["CACHE_DIR"] = str(self.cache_dir / self.precision)
        return config

    def load(self, entry: GraphEntry, path: Path, manifest: Manifest) -> GraphFn:
        # compile_model from the path (not a read Model): with a cache hit OpenVINO then skips
        # reading and converting the ONNX file too. The cache key hashes the file's content,
        # so each precision gets its own folder (config()).
        compiled = self.core.compile_model(str(path), "CPU", self.config())
        if self.cache_dir is not None:
            self.loaded_from_cache[path.name] = bool(compiled.get_property("LOADED_FROM_CACHE"))
        names = {name for port in compiled.inputs for name in port.get_names()}
        expected = [s.name for s in entry.inputs]
        if not set(expected) <= names or len(compiled.inputs) != len(expected):
            raise BackendError(
                f"{path.name}: the graph's inputs are {sorted(names)}, the manifest "
                f"lists {expected}"
            )
        if len(compiled.outputs) != len(entry.outputs):
            raise BackendError(
                f"{path.name}: the graph has {len(compiled.outputs)} outputs, the "
                f"manifest lists {len(entry.outputs)}"
            )
        request = compiled.create_infer_request()
        count = len(entry.outputs)

        def run(inputs: Dict[str, np.ndarray]) -> List[np.ndarray]:
            request.infer(inputs)
            # copies: the request reuses its output buffers on the next call
            return [np.array(request.get_output_tensor(i).data, copy=True) for i in range(count)]

        return run


def _load_openvino(entry: GraphEntry, path: Path, manifest: Manifest) -> GraphFn:
    return OpenVINOBackend("fp32", openvino_cache_dir()).load(entry, path, manifest)


Loader = Callable[[GraphEntry, Path, Manifest], GraphFn]
# Lite's loader also takes the session (in process or a worker): see graph_loader
_LOADERS: Dict[str, Loader] = {
    "onnxruntime": _load_onnxruntime,
    "mindspore": _load_mindspore,
    "openvino": _load_openvino,
}


def graph_loader(
    backend: str, precision: str = "fp32", threads: Optional[int] = None, lite_session: Any = None
) -> Loader:
    """The loader of ``backend`` for a resolved precision (see ``resolve_precision``); one
    OpenVINO core serves all graphs of an artifact, and one Lite session (in process or a
    worker, ``lite.open_lite``; opened here when none is given) all Lite graphs."""
    if backend == "openvino":
        return OpenVINOBackend(precision, openvino_cache_dir(), threads).load
    if backend == "lite":
        if lite_session is None:
            from .lite import open_lite

            lite_session = open_lite()
        session = lite_session
        return lambda entry, path, manifest: _load_lite(entry, path, manifest, session)
    return _LOADERS[backend]


def required_graph_names(manifest: Manifest) -> List[str]:
    """The graphs a run of ``manifest`` needs (svdeploy.contract.required_graphs)."""
    return list(required_graphs(manifest.num_frames, manifest.decode_chunk_size))


def load_graph(
    entry: GraphEntry, path: Path, backend: str, manifest: Manifest, loader: Optional[Loader] = None
) -> CheckedGraph:
    try:
        run = (loader or graph_loader(backend))(entry, path, manifest)
    except (BackendError, ManifestError):
        raise
    except Exception as exc:
        raise BackendError(
            f"backend {backend!r} cannot load {str(path)!r} ({entry.name}): {first_line(exc)}"
        ) from exc
    return CheckedGraph(entry, run, backend=backend)


@dataclass
class LoadedArtifact:
    directory: Path
    manifest: Manifest
    backend: str
    graphs: Dict[str, CheckedGraph]
    load_seconds: float = 0.0
    graph_load_seconds: Dict[str, float] = field(default_factory=dict)
    precision: str = "fp32"


def load_artifact(
    directory: Union[str, os.PathLike],
    backend: Optional[str] = None,
    verify_hashes: bool = True,
    precision: Optional[str] = None,
    lite_python: Optional[str] = None,
) -> LoadedArtifact:
    """Read the manifest, pick the backend and its precision (``fp32``, ``bf16`` or ``auto``,
    see ``resolve_precision``), verify the hashes of the graphs it will run and load them,
    each wrapped in a CheckedGraph. ``lite_python`` (else ``SVDEPLOY_LITE_PYTHON``) names the
    interpreter that runs MindSpore Lite when it does not import here."""
    start = time.perf_counter()
    directory = Path(directory)
    # First pass without hashing: only the chosen backend's files are hashed below.
    manifest = read_manifest(directory, verify_hashes=False, formats=[])
    require_complete(manifest, directory)
    chosen = choose_backend(manifest, backend, lite_python=lite_python)
    resolved = resolve_precision(chosen, manifest, precision)
    fmt = runnable_format(chosen, manifest.formats())
    assert fmt is not None  # choose_backend picks a backend that can run one of the formats
    manifest = read_manifest(directory, verify_hashes=verify_hashes, formats=[fmt])
    lite_session = None
    if chosen == "lite":
        from .lite import open_lite

        lite_session = open_lite(lite_python)
    loader = graph_loader(chosen, resolved, lite_session=lite_session)
    graphs: Dict[str, CheckedGraph] = {}
    load_seconds: Dict[str, float] = {}
    for name in required_graph_names(manifest):
        entry = manifest.graph(name, fmt)
        t0 = time.perf_counter()
        graphs[name] = load_graph(entry, directory / entry.file, chosen, manifest, loader)
        load_seconds[name] = time.perf_counter() - t0
    return LoadedArtifact(
        directory=directory,
        manifest=manifest,
        backend=chosen,
        graphs=graphs,
        load_seconds=time.perf_counter() - start,
        graph_load_seconds=load_seconds,
        precision=resolved,
    )
