"""MindSpore Lite, in this interpreter or in another one.

MindSpore Lite wheels exist for a few Python versions only (``mindspore-lite`` 2.0.0: CPython
3.7), so the library is often installed in another interpreter than svdeploy's. ``open_lite``
returns a ``LiteSession`` with the same three calls either way:

- in process, when no interpreter is named and ``mindspore_lite`` imports here;
- through ``lite_worker.py`` (this package's one-file worker: numpy and mindspore_lite only)
  started by path with the named interpreter (``--lite-python`` / ``SVDEPLOY_LITE_PYTHON`` /
  ``lite_python=``), exchanging length-prefixed JSON headers and raw array bytes over pipes.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

import svdeploy.runtime.lite_worker as lite_worker
from svdeploy.errors import BackendError

LITE_PYTHON_ENV = "SVDEPLOY_LITE_PYTHON"
WORKER_PATH = Path(lite_worker.__file__).resolve()
_START_TIMEOUT_S = 120.0


def resolve_lite_python(explicit: Optional[str] = None) -> Optional[str]:
    """The interpreter named by the caller, else by ``SVDEPLOY_LITE_PYTHON``, else None."""
    if explicit:
        return str(explicit)
    return os.environ.get(LITE_PYTHON_ENV) or None


def lite_importable() -> bool:
    try:
        importlib.import_module("mindspore_lite")
    except ImportError:
        return False
    return True


class LiteGraph:
    """One built Lite graph: ``run(arrays) -> arrays`` in the graph's input/output order."""

    def __init__(
        self,
        session: "LiteSession",
        handle: Any,
        inputs: List[Dict[str, Any]],
        outputs: List[Dict[str, Any]],
    ) -> None:
        self.session = session  # keeps a worker alive while any of its graphs is
        self.handle = handle
        self.inputs = inputs
        self.outputs = outputs

    def run(self, arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
        return self.session.run(self.handle, arrays)


class LiteSession:
    """MindSpore Lite calls: ``convert`` (ONNX → Lite MindIR), ``load`` and ``run``."""

    version: str
    where: str  # "in process" or the worker's interpreter, for messages and manifests

    def convert(self, onnx_path: Path, output_stem: Path) -> Path:
        raise NotImplementedError

    def load(self, path: Path, target: str = "cpu", threads: int = 0) -> LiteGraph:
        raise NotImplementedError

    def run(self, handle: Any, arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
        raise NotImplementedError

    def unload(self, graph: LiteGraph) -> None:
        """Free a graph's memory (export validation loads each graph once)."""
        graph.handle = None

    def close(self) -> None:
        pass


class InProcessLite(LiteSession):
    def __init__(self) -> None:
        self.version = lite_worker.lite_version()
        self.where = "in process"

    def convert(self, onnx_path: Path, output_stem: Path) -> Path:
        try:
            return Path(lite_worker.convert_onnx(str(onnx_path), str(output_stem)))
        except lite_worker.WorkerError as exc:
            raise BackendError(str(exc)) from None

    def load(self, path: Path, target: str = "cpu", threads: int = 0) -> LiteGraph:
        try:
            model = lite_worker.LiteModel(str(path), target, threads)
        except lite_worker.WorkerError as exc:
            raise BackendError(str(exc)) from None
        return LiteGraph(self, model, model.inputs, model.outputs)

    def run(self, handle: Any, arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
        try:
            return handle.run(list(arrays))
        except lite_worker.WorkerError as exc:
            raise BackendError(str(exc)) from None


class WorkerLite(LiteSession):
    """``lite_worker.py serve`` in another interpreter; its stderr (Lite's log) goes to a
    temporary file whose tail is quoted when the worker fails."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.where = f"worker in {python}"
        self._lock = threading.Lock()
        self._log = tempfile.TemporaryFile(prefix="svdeploy-lite-")
        try:
            self._proc = subprocess.Popen(
                [python, "-u", str(WORKER_PATH), "serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                env=_worker_env(),
            )
        except OSError as exc:
            self._log.close()
            raise BackendError(
                f"MindSpore Lite interpreter {python!r} cannot be started "
                f"({exc.strerror or exc}); expected a Python ≥ 3.7 with the "
                "mindspore_lite package (--lite-python / "
                f"{LITE_PYTHON_ENV})"
            ) from None
        self._finalizer = weakref.finalize(self, _stop, self._proc, self._log)
        try:
            hello = self._request({"op": "hello"})[0]
        except BackendError as exc:
            self.close()
            raise BackendError(
                f"MindSpore Lite interpreter {python!r} cannot serve svdeploy: "
                f"{exc}; expected a Python ≥ 3.7 with numpy and mindspore_lite "
                f"(--lite-python / {LITE_PYTHON_ENV})"
            ) from None
        if hello.get("protocol") != lite_worker.PROTOCOL_VERSION:
            self.close()
            raise BackendError(
                f"the Lite worker in {python!r} speaks protocol "
                f"{hello.get('protocol')!r}, expected "
                f"{lite_worker.PROTOCOL_VERSION}"
            )
        self.version = str(hello["lite_version"])
        self.worker_python = str(hello.get("python", "?"))

    def _request(self, header: Dict[str, Any], arrays: Sequence[np.ndarray] = ()):
        with self._lock:
            try:
                lite_worker.write_message(self._proc.stdin, header, arrays)
                message = lite_worker.read_message(self._proc.stdout)
            except (OSError, EOFError, ValueError, lite_worker.WorkerError) as exc:
                message = None
                cause = f"{type(exc).__name__}: {exc}"
            else:
                cause = "it closed its output"
        if message is None:
            self._proc.poll()
            raise BackendError(
                f"the MindSpore Lite worker in {self.python!r} failed during "
                f"{header.get('op')!r} ({cause}; exit status "
                f"{self._proc.returncode}): {self._log_tail()}"
            )
        reply, out = message
        if not reply.get("ok"):
            raise BackendError(f"MindSpore Lite worker ({self.python}): {reply.get('error')}")
        return reply, out

    def _log_tail(self) -> str:
        try:
            self._log.seek(0)
            lines = self._log.read().decode("utf-8", "replace").strip().splitlines()
        except (OSError, ValueError):
            return "(no log)"
        # Lite logs many WARNING lines; the error is usually in the last non-warning ones
        useful = [line for line in lines if "[WARNING]" not in line] or lines
        return " | ".join(useful[-4:]) or "(its stderr was empty)"

    def convert(self, onnx_path: Path, output_stem: Path) -> Path:
        reply, _ = self._request(
            {"op": "convert", "onnx": str(onnx_path), "output": str(output_stem)}
        )
        return Path(reply["file"])

    def load(self, path: Path, target: str = "cpu", threads: int = 0) -> LiteGraph:
        reply, _ = self._request(
            {"op": "load", "file": str(path), "target": target, "threads": int(threads)}
        )
        return LiteGraph(self, reply["handle"], reply["inputs"], reply["outputs"])

    def run(self, handle: Any, arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
        return self._request({"op": "run", "handle": handle}, arrays)[1]

    def unload(self, graph: LiteGraph) -> None:
        self._request({"op": "unload", "handle": graph.handle})
        graph.handle = None

    def close(self) -> None:
        self._finalizer()


def _worker_env() -> Dict[str, str]:
    # the other interpreter must not pick up this interpreter's packages
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _stop(proc: subprocess.Popen, log) -> None:
    try:
        if proc.poll() is None:
            try:
                if proc.stdin is not None:
                    lite_worker.write_message(proc.stdin, {"op": "exit"})
                    proc.stdin.close()
                proc.wait(timeout=10)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
    finally:
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except (OSError, ValueError):
                pass
        log.close()


def open_lite(lite_python: Optional[str] = None) -> LiteSession:
    """A Lite session: through the worker when an interpreter is named (argument or
    ``SVDEPLOY_LITE_PYTHON``), else in process; a clear BackendError when neither works."""
    python = resolve_lite_python(lite_python)
    if python is not None:
        return WorkerLite(python)
    if lite_importable():
        return InProcessLite()
    raise BackendError(
        f"MindSpore Lite (mindspore_lite) does not import in this Python "
        f"({sys.version.split()[0]}); its wheels exist for a few Python versions only "
        f"(mindspore-lite 2.0.0: CPython 3.7). Name an interpreter that has it with "
        f"--lite-python PYTHON or {LITE_PYTHON_ENV}=PYTHON (e.g. a Python 3.7 venv with "
        "`pip install mindspore-lite==2.0.0 numpy`)"
    )


__all__ = [
    "open_lite",
    "resolve_lite_python",
    "lite_importable",
    "LiteSession",
    "LiteGraph",
    "LITE_PYTHON_ENV",
    "WORKER_PATH",
]
