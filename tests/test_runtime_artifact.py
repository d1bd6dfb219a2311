"""The runtime over real artifact files: MindIR (mindspore) and ONNX (onnxruntime) backends,
using the fake artifact of tests/svdref/fake_artifact.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from svdeploy.errors import BackendError, InputError, ManifestError
from svdeploy.manifest import read_manifest
from svdeploy.runtime import VideoPipeline, choose_backend
from svdref.fake_artifact import (
    LH,
    LW,
    NUMPY_GRAPHS,
    B,
    C,
    D,
    F,
    H,
    W,
    build_fake_artifact,
    copy_artifact,
    numpy_pipeline,
)


@pytest.fixture(scope="session")
def artifact(tmp_path_factory) -> Path:
    return build_fake_artifact(tmp_path_factory.mktemp("fake_artifact"))


@pytest.fixture(scope="session")
def input_image() -> np.ndarray:
    from svdref.diffusers_tiny import make_image

    return make_image(H, W)


# ---------------------------------------------------------------------------------------------
# Tests: graphs and backends
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["mindspore", "onnxruntime"])
def test_each_graph_matches_numpy(artifact, backend):
    pipe = VideoPipeline.load(artifact, backend=backend)
    rng = np.random.default_rng(7)
    for name, graph in pipe.graphs.items():
        inputs = {
            s.name: rng.standard_normal(s.shape).astype(np.float32) for s in graph.entry.inputs
        }
        got = graph(**inputs)
        want = NUMPY_GRAPHS[name](inputs)
        for key, value in want.items():
            scale = max(1.0, float(np.abs(value).max()))
            assert np.abs(got[key] - value).max() <= 1e-5 * scale, (backend, name, key)


def test_backends_agree_with_each_other_and_numpy(artifact, input_image):
    frames = {}
    for backend in ("mindspore", "onnxruntime"):
        pipe = VideoPipeline.load(artifact, backend=backend)
        frames[backend] = pipe.generate(input_image, seed=3, progress=False).frames
    frames["numpy"] = numpy_pipeline().generate(input_image, seed=3, progress=False).frames
    assert frames["numpy"].shape == (F, H, W, 3)
    # the toy decoder's output reaches beyond [-1, 1], so clipping is exercised
    assert (frames["numpy"] == 0.0).any() or (frames["numpy"] == 1.0).any()
    # float32 rounding differs between backends; the Euler steps amplify it (×700 noise
    # scale, ÷0.18215 before decoding), so agreement is ~1e-5, far below one uint8 level.
    for a, b in (("mindspore", "numpy"), ("onnxruntime", "numpy"), ("onnxruntime", "mindspore")):
        diff = float(np.abs(frames[a] - frames[b]).max())
        print(f"max |frames {a} - frames {b}| = {diff:.2e}")
        assert diff < 1e-4, (a, b, diff)


@pytest.mark.parametrize("backend", ["mindspore", "onnxruntime"])
def test_fixed_seed_is_bitwise_deterministic(artifact, input_image, backend):
    pipe = VideoPipeline.load(artifact, backend=backend)
    first = pipe.generate(input_image, seed=11, progress=False)
    second = pipe.generate(input_image, seed=11, progress=False)
    other = pipe.generate(input_image, seed=12, progress=False)
    assert np.array_equal(first.frames, second.frames)
    assert not np.array_equal(first.frames, other.frames)
    assert first.seed == 11


def test_default_backend_prefers_openvino_then_onnxruntime_then_mindspore(
    artifact, tmp_path, monkeypatch
):
    from svdeploy.runtime import backends

    onnx_default = "openvino" if backends.backend_importable("openvino") else "onnxruntime"
    assert VideoPipeline.load(artifact).backend == onnx_default
    # without OpenVINO the ONNX graphs go to ONNX Runtime
    real_import = backends.import_backend

    def no_openvino(backend):
        if backend == "openvino":
            raise BackendError("backend 'openvino' needs the Python package 'openvino'")
        return real_import(backend)

    monkeypatch.setattr(backends, "import_backend", no_openvino)
    assert VideoPipeline.load(artifact).backend == "onnxruntime"
    monkeypatch.undo()
    mindir_only = copy_artifact(artifact, tmp_path / "mindir_only", formats=("mindir",))
    assert VideoPipeline.load(mindir_only).backend == "mindspore"
    with pytest.raises(BackendError, match=r"backend 'onnxruntime' runs onnx graphs.*only mindir"):
        VideoPipeline.load(mindir_only, backend="onnxruntime")
    assert choose_backend(read_manifest(artifact, verify_hashes=False), "mindspore") == "mindspore"


def test_ascend_artifacts_prefer_lite(artifact):
    from dataclasses import replace

    from svdeploy.runtime.backends import backend_importable, backend_preference

    cpu = read_manifest(artifact, verify_hashes=False)
    ascend = replace(cpu, target="ascend")
    assert backend_preference(cpu) == ("openvino", "onnxruntime", "mindspore", "lite")
    assert backend_preference(ascend) == ("lite", "openvino", "onnxruntime", "mindspore")
    # without MindSpore Lite the choice falls through to the next backend that can run it
    if not backend_importable("lite"):
        assert choose_backend(ascend) == (
            "openvino" if backend_importable("openvino") else "onnxruntime"
        )


def test_unknown_and_lite_backends_give_clear_errors(artifact, monkeypatch):
    monkeypatch.delenv("SVDEPLOY_LITE_PYTHON", raising=False)
    with pytest.raises(BackendError, match=r"backend 'tensorrt' is unknown; expected one of"):
        VideoPipeline.load(artifact, backend="tensorrt")
    import importlib.util

    if importlib.util.find_spec("mindspore_lite") is not None:
        pytest.skip("mindspore_lite is installed here; the not-installed message cannot be shown")
    with pytest.raises(
        BackendError,
        match=r"MindSpore Lite \(mindspore_lite\) does not import in "
        r"this Python .*--lite-python PYTHON or "
        r"SVDEPLOY_LITE_PYTHON",
    ):
        VideoPipeline.load(artifact, backend="lite")


def test_tampered_graph_file_is_refused(artifact, tmp_path):
    copy = copy_artifact(artifact, tmp_path / "tampered")
    data = bytearray((copy / "unet.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "unet.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"'unet.onnx' has sha256 .*modified or damaged"):
        VideoPipeline.load(copy, backend="onnxruntime")
    # only the chosen backend's files are hashed: the intact MindIR graphs still load
    assert VideoPipeline.load(copy, backend="mindspore").backend == "mindspore"


def test_not_an_artifact(tmp_path):
    with pytest.raises(ManifestError, match="is not a directory"):
        VideoPipeline.load(tmp_path / "nowhere")
    with pytest.raises(ManifestError, match="manifest.json is missing"):
        VideoPipeline.load(tmp_path)


def test_graph_calls_are_checked_against_the_manifest(artifact):
    unet = VideoPipeline.load(artifact, backend="onnxruntime").graphs["unet"]
    good = {s.name: np.zeros(s.shape, np.float32) for s in unet.entry.inputs}
    assert unet(**good)["v"].shape == (B * F, C, LH, LW)
    with pytest.raises(
        InputError, match=r"input 'sample': shape \(10, 8, 4, 4\), expected \(10, 8, 8, 8\)"
    ):
        unet(**dict(good, sample=np.zeros((10, 8, 4, 4), np.float32)))
    with pytest.raises(InputError, match=r"input 'context': dtype float64, expected float32"):
        unet(**dict(good, context=np.zeros((B, 1, D), np.float64)))
    renamed = dict(good)
    renamed["timestep"] = renamed.pop("c_noise")
    with pytest.raises(InputError, match=r"missing 'c_noise'; unexpected 'timestep' input"):
        unet(**renamed)


class _FakeLite:
    """A Lite session that records loads and unloads (svd-export validates each Lite graph
    through the runtime's loader once, then frees it)."""

    version = "2.0.0"
    where = "in process"

    def __init__(self, inputs: int, outputs) -> None:
        self.inputs, self.outputs, self.calls = inputs, outputs, []

    def load(self, path, target="cpu", threads=0):
        self.calls.append(("load", Path(path).name, target))
        zeros = [np.zeros(s.shape, np.float32) for s in self.outputs]
        return SimpleNamespace(inputs=[{}] * self.inputs, run=lambda arrays: zeros)

    def unload(self, graph) -> None:
        self.calls.append(("unload", graph.inputs))


def test_closing_a_lite_graph_frees_it_in_its_session(artifact):
    from svdeploy.runtime.backends import graph_loader, load_graph

    manifest = read_manifest(artifact, verify_hashes=False)
    entry = manifest.graph("vae_encoder", "onnx")
    path = artifact / entry.file
    session = _FakeLite(len(entry.inputs), entry.outputs)
    graph = load_graph(entry, path, "lite", manifest, graph_loader("lite", lite_session=session))
    out = graph(**{s.name: np.zeros(s.shape, np.float32) for s in entry.inputs})
    assert set(out) == {s.name for s in entry.outputs}
    graph.close()
    assert session.calls == [("load", path.name, "cpu"), ("unload", [{}])]
    # a graph refused at load (other input count) is freed too
    wrong = _FakeLite(len(entry.inputs) + 1, entry.outputs)
    with pytest.raises(BackendError, match=r"the Lite graph takes 2 inputs, the manifest lists 1"):
        load_graph(entry, path, "lite", manifest, graph_loader("lite", lite_session=wrong))
    assert wrong.calls == [("load", path.name, "cpu"), ("unload", [{}, {}])]


# ---------------------------------------------------------------------------------------------
# Import isolation (fresh process)
# ---------------------------------------------------------------------------------------------
def test_runtime_loads_no_model_export_train_or_kernel_code(artifact, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import svdeploy.runtime
        import svdeploy.runtime.cli
        from svdeploy.runtime import VideoPipeline, save_frames
        image = (np.arange({H}*{W}*3) % 255).astype(np.uint8).reshape({H}, {W}, 3)
        for backend in ("mindspore", "onnxruntime"):
            pipe = VideoPipeline.load({str(artifact)!r}, backend=backend)
            frames = pipe(image, seed=1, progress=False)
            assert frames.shape == ({F}, {H}, {W}, 3), frames.shape
        save_frames(frames, {str(tmp_path / "isolation.mp4")!r}, fps=7)
        forbidden = ("svdeploy.models", "svdeploy.train", "svdeploy.export", "svdeploy.kernels")
        loaded = sorted(m for m in sys.modules if m.startswith(forbidden))
        print("LOADED", loaded)
        print("HAS_BACKENDS", "mindspore" in sys.modules, "onnxruntime" in sys.modules)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout
    assert "HAS_BACKENDS True True" in proc.stdout  # the runs really used both backends
