"""MindSpore Lite worker: converts ONNX graphs and runs Lite graphs for svdeploy.

One file, numpy and ``mindspore_lite`` only, Python >= 3.7 syntax, so that it runs in whatever
interpreter has MindSpore Lite (its wheels exist for a few Python versions only; 2.0.0 is
CPython 3.7). svdeploy either imports it (when ``mindspore_lite`` imports in svdeploy's own
interpreter) or starts it by path with the other interpreter::

    PYTHON lite_worker.py serve                  # the pipe protocol below (svdeploy starts this)
    PYTHON lite_worker.py validate ARTIFACT_DIR [--target ascend] [--graph-dir ascend]
                                                 # host check against the artifact's references

Protocol (stdin → worker, worker → stdout), no pickle: every message is a 4-byte big-endian
length, a UTF-8 JSON header of that length, then the raw C-order bytes of each array that the
header's ``arrays`` list describes (``{"dtype": "float32", "shape": [..]}``), in order.
Requests carry ``op`` (hello, convert, load, run, unload, exit); replies carry ``ok`` and, when
false, ``error``. Lite's own log lines go to stderr: the protocol keeps a private copy of fd 1.
"""

import json
import os
import struct
import sys

import numpy as np

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 1 << 20
MAX_ARRAY_BYTES = 1 << 36
DTYPES = ("float32", "float16", "float64", "int32", "int64", "uint8")


class WorkerError(Exception):
    """A bad request or a Lite failure; sent back as one message, the worker keeps serving."""


# ---------------------------------------------------------------------------------------------
# Lite calls (also used in process by svdeploy.runtime.lite)
# ---------------------------------------------------------------------------------------------
def lite_version():
    import mindspore_lite

    return str(getattr(mindspore_lite, "__version__", "unknown"))


def convert_onnx(onnx_path, output_stem):
    """Convert an ONNX file with Lite's converter; returns the written ``<stem>.mindir``."""
    import mindspore_lite as mslite

    if not os.path.isfile(onnx_path):
        raise WorkerError("convert: no ONNX file at {!r}".format(onnx_path))
    converter = mslite.Converter()
    converter.save_type = mslite.ModelType.MINDIR
    try:
        converter.convert(mslite.FmkType.ONNX, onnx_path, output_stem)
    except RuntimeError as exc:
        raise WorkerError(
            "MindSpore Lite {} could not convert {}: {} (its log is on the worker's stderr)".format(
                lite_version(), onnx_path, exc
            )
        )
    written = output_stem + ".mindir"
    if not os.path.isfile(written):
        raise WorkerError(
            "MindSpore Lite's converter reported success but wrote no {}".format(written)
        )
    return written


class LiteModel(object):
    """One built Lite graph; ``run`` takes and returns arrays in the graph's input order."""

    def __init__(self, path, target="cpu", threads=0):
        import mindspore_lite as mslite

        if not os.path.isfile(path):
            raise WorkerError("load: no Lite graph at {!r}".format(path))
        context = mslite.Context()
        context.target = [target]
        if target == "cpu" and threads:
            context.cpu.thread_num = int(threads)
        self.path = path
        self.model = mslite.Model()
        try:
            self.model.build_from_file(path, mslite.ModelType.MINDIR, context)
        except RuntimeError as exc:
            raise WorkerError(
                "MindSpore Lite {} could not build {} for {}: {}".format(
                    lite_version(), path, target, exc
                )
            )
        self.inputs = [_tensor_spec(t) for t in self.model.get_inputs()]
        # Lite 2.0's Model has no get_outputs: outputs are known after the first predict
        self.outputs = None

    def run(self, arrays):
        if len(arrays) != len(self.inputs):
            raise WorkerError(
                "{}: got {} input arrays, the graph takes {} ({})".format(
                    os.path.basename(self.path),
                    len(arrays),
                    len(self.inputs),
                    ", ".join(s["name"] for s in self.inputs),
                )
            )
        tensors = self.model.get_inputs()
        for tensor, spec, array in zip(tensors, self.inputs, arrays):
            if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
                raise WorkerError(
                    "{} input {!r}: got {} {}, the graph takes {} {}".format(
                        os.path.basename(self.path),
                        spec["name"],
                        array.dtype,
                        list(array.shape),
                        spec["dtype"],
                        spec["shape"],
                    )
                )
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
        outputs = self.model.predict(tensors)
        self.outputs = [_tensor_spec(t) for t in outputs]
        return [np.array(t.get_data_to_numpy()) for t in outputs]


def _tensor_spec(tensor):
    dtype = str(tensor.dtype).rsplit(".", 1)[-1].lower()
    return {
        "name": tensor.name,
        "shape": [int(d) for d in tensor.shape],
        "dtype": {
            "float32": "float32",
            "float16": "float16",
            "int32": "int32",
            "int64": "int64",
            "uint8": "uint8",
        }.get(dtype, dtype),
    }


# ---------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------
def _read_exactly(stream, count, what):
    chunks = []
    while count:
        chunk = stream.read(count)
        if not chunk:
            raise EOFError("the stream ended inside {}".format(what))
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def _array_meta(meta, index):
    if not isinstance(meta, dict):
        raise WorkerError(
            "array {}: expected an object with dtype and shape, got {!r}".format(index, meta)
        )
    dtype, shape = meta.get("dtype"), meta.get("shape")
    if dtype not in DTYPES:
        raise WorkerError(
            "array {}: dtype {!r} is not one of {}".format(index, dtype, ", ".join(DTYPES))
        )
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise WorkerError(
            "array {}: shape {!r} must be a list of non-negative integers".format(index, shape)
        )
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise WorkerError(
            "array {}: {} bytes is above the limit {}".format(index, nbytes, MAX_ARRAY_BYTES)
        )
    return np.dtype(dtype), tuple(shape), nbytes


def read_message(stream):
    """(header, arrays) or None at a clean end of stream. A malformed header raises
    WorkerError after its declared bytes are consumed; a truncated stream raises EOFError."""
    prefix = stream.read(4)
    if not prefix:
        return None
    if len(prefix) < 4:
        prefix += _read_exactly(stream, 4 - len(prefix), "a length prefix")
    (length,) = struct.unpack(">I", prefix)
    if length > MAX_HEADER_BYTES:
        raise EOFError(
            "header of {} bytes is above the limit {}; the stream cannot be resynchronised".format(
                length, MAX_HEADER_BYTES
            )
        )
    raw = _read_exactly(stream, length, "a header")
    try:
        header = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise EOFError(
            "header is not UTF-8 JSON ({}); the stream cannot be resynchronised".format(exc)
        )
    if not isinstance(header, dict) or not isinstance(header.get("arrays", []), list):
        raise EOFError(
            "header must be a JSON object with an 'arrays' list, got {!r}".format(raw[:200])
        )
    metas = [_array_meta(m, i) for i, m in enumerate(header.get("arrays", []))]
    arrays = []
    for dtype, shape, nbytes in metas:
        data = _read_exactly(stream, nbytes, "array data")
        arrays.append(np.frombuffer(data, dtype=dtype).reshape(shape))
    return header, arrays


def write_message(stream, header, arrays=()):
    arrays = [np.ascontiguousarray(a) for a in arrays]
    header = dict(header)
    header["arrays"] = [{"dtype": str(a.dtype), "shape": [int(d) for d in a.shape]} for a in arrays]
    raw = json.dumps(header).encode("utf-8")
    stream.write(struct.pack(">I", len(raw)))
    stream.write(raw)
    for array in arrays:
        stream.write(memoryview(array).cast("B"))
    stream.flush()


# ---------------------------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------------------------
class _Server(object):
    def __init__(self):
        self.models = {}
        self.next_handle = 1

    def handle(self, header, arrays):
        op = header.get("op")
        if op == "hello":
            return {
                "protocol": PROTOCOL_VERSION,
                "lite_version": lite_version(),
                "python": sys.version.split()[0],
            }, []
        if op == "convert":
            return {"file": convert_onnx(_str(header, "onnx"), _str(header, "output"))}, []
        if op == "load":
            model = LiteModel(
                _str(header, "file"), header.get("target", "cpu"), header.get("threads", 0)
            )
            handle, self.next_handle = self.next_handle, self.next_handle + 1
            self.models[handle] = model
            return {"handle": handle, "inputs": model.inputs, "outputs": model.outputs}, []
        if op == "run":
            return {}, self._model(header).run(arrays)
        if op == "unload":
            self._model(header)  # an unknown handle is an error
            del self.models[header["handle"]]
            return {}, []
        raise WorkerError(
            "unknown op {!r}; expected hello, convert, load, run, unload or exit".format(op)
        )

    def _model(self, header):
        model = self.models.get(header.get("handle"))
        if model is None:
            raise WorkerError("no loaded graph with handle {!r}".format(header.get("handle")))
        return model


def _str(header, key):
    value = header.get(key)
    if not isinstance(value, str) or not value:
        raise WorkerError("{!r} must be a non-empty string, got {!r}".format(key, value))
    return value


def serve(inp, out):
    """Answer requests until 'exit' or the end of ``inp``. Returns the exit status."""
    server = _Server()
    while True:
        try:
            message = read_message(inp)
        except WorkerError as exc:  # a bad array description: the rest of the stream is unknown
            write_message(out, {"ok": False, "error": str(exc)})
            return 3
        except EOFError as exc:
            write_message(out, {"ok": False, "error": "protocol error: {}".format(exc)})
            return 3
        if message is None or message[0].get("op") == "exit":
            return 0
        try:
            reply, arrays = server.handle(*message)
            reply["ok"] = True
        except Exception as exc:  # noqa: BLE001 - reported to the caller, the worker keeps serving
            reply, arrays = {"ok": False, "error": "{}: {}".format(type(exc).__name__, exc)}, []
        write_message(out, reply, arrays)


# ---------------------------------------------------------------------------------------------
# Host validation (Ascend): converted graphs against the references stored in the artifact
# ---------------------------------------------------------------------------------------------
def validate(artifact, target, graph_dir, tolerance):
    """Run each reference case of ``artifact``/reference through the graph in ``graph_dir``;
    prints one line per graph and returns 0 when every relative L2 error is ≤ tolerance."""
    with open(os.path.join(artifact, "manifest.json")) as handle:
        manifest = json.load(handle)
    cases = manifest.get("extra", {}).get("reference_outputs", {})
    if not cases:
        print(
            "error: {} stores no reference outputs (export with --target ascend)".format(artifact)
        )
        return 2
    failed = 0
    for name, case in sorted(cases.items()):
        data = np.load(os.path.join(artifact, case["file"]), allow_pickle=False)
        graph = (
            os.path.join(artifact, graph_dir, case["graph"])
            if graph_dir
            else os.path.join(artifact, case["graph"])
        )
        model = LiteModel(graph, target)
        got = model.run([data["input_{}".format(i)] for i in range(case["num_inputs"])])
        want = [data["output_{}".format(i)] for i in range(case["num_outputs"])]
        error = max(_relative_error(g, w) for g, w in zip(got, want))
        ok = error <= tolerance
        failed += not ok
        print(
            "{:18s} {:8s} max rel L2 {:.3e} {}".format(
                name, target, error, "ok" if ok else "FAILED"
            )
        )
    return 1 if failed else 0


def _relative_error(got, want):
    # svdeploy.contract.relative_error, restated: this file runs alone (numpy and Lite only)
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape or not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def main(argv):
    if argv[:1] == ["serve"]:
        protocol_out = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)  # anything Lite prints on stdout goes to stderr, not into the protocol
        sys.stdout = sys.stderr
        status = serve(sys.stdin.buffer, protocol_out)
        protocol_out.flush()
        sys.stderr.flush()
        # Lite 2.0 can crash in its static destructors at interpreter exit; all is said by now
        os._exit(status)
    if argv[:1] == ["validate"] and len(argv) >= 2:
        options = dict(zip(argv[2::2], argv[3::2]))
        return validate(
            argv[1],
            options.get("--target", "cpu"),
            options.get("--graph-dir", ""),
            float(options.get("--tolerance", "1e-3")),
        )
    sys.stderr.write(
        "usage: lite_worker.py serve | validate ARTIFACT [--target cpu|ascend] "
        "[--graph-dir DIR] [--tolerance T]\n"
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
