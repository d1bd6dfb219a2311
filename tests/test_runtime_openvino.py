"""The OpenVINO backend and runtime precision over the fake artifact of
tests/svdref/fake_artifact.py: graph parity in fp32, bf16 within its bound, bf16 refused on a
CPU without it (simulated), precision refusals of the other backends, the compile cache, and
the precision in svd-run's sidecar. End-to-end parity against diffusers is in
test_e2e_parity.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from svdeploy.errors import BackendError, InputError
from svdeploy.manifest import read_manifest
from svdeploy.runtime import VideoPipeline, load_artifact
from svdeploy.runtime.backends import OpenVINOBackend, graph_loader, resolve_precision
from svdeploy.runtime.cli import main as run_cli
from svdref.fake_artifact import NUMPY_GRAPHS, H, W, build_fake_artifact, numpy_pipeline

ov = pytest.importorskip("openvino")  # the test extra installs it


def cpu_has_bf16() -> bool:
    return OpenVINOBackend.has_bf16(ov.Core())


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return build_fake_artifact(tmp_path_factory.mktemp("fake_artifact_ov"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Each test compiles into its own cache folder, never the user's."""
    cache = tmp_path / "ov-cache"
    monkeypatch.setenv("SVDEPLOY_OPENVINO_CACHE", str(cache))
    return cache


@pytest.fixture
def no_bf16_cpu(monkeypatch):
    """Simulate a CPU without native bf16: OpenVINO's capability list without BF16."""
    monkeypatch.setattr(
        OpenVINOBackend,
        "cpu_capabilities",
        staticmethod(lambda core: ["FP32", "INT8", "BIN", "EXPORT_IMPORT"]),
    )


def graph_errors(pipe: VideoPipeline) -> dict:
    """Max error of every graph output against the NumPy reference, relative to max(1, |ref|)."""
    rng = np.random.default_rng(7)
    errors = {}
    for name, graph in pipe.graphs.items():
        inputs = {
            s.name: rng.standard_normal(s.shape).astype(np.float32) for s in graph.entry.inputs
        }
        got, want = graph(**inputs), NUMPY_GRAPHS[name](inputs)
        for key, value in want.items():
            errors[f"{name}.{key}"] = float(
                np.abs(got[key] - value).max() / max(1.0, float(np.abs(value).max()))
            )
    return errors


def test_fp32_graphs_match_numpy(artifact):
    pipe = VideoPipeline.load(artifact, backend="openvino", precision="fp32")
    assert (pipe.backend, pipe.precision) == ("openvino", "fp32")
    errors = graph_errors(pipe)
    assert len(errors) == 5 and max(errors.values()) <= 1e-5, errors


def test_bf16_runs_within_its_bound(artifact, input_image_fake):
    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16; the refusal is tested with a simulated CPU")
    pipe = VideoPipeline.load(artifact, backend="openvino", precision="bf16")
    assert pipe.precision == "bf16"
    errors = graph_errors(pipe)
    # bf16 keeps 8 mantissa bits (2^-9 ≈ 2e-3 relative per rounding): a few roundings per
    # graph stay under 5e-2 of the output's scale, and bf16 really ran (not silently fp32)
    assert max(errors.values()) <= 5e-2, errors
    assert max(errors.values()) >= 1e-4, errors
    frames = pipe.generate(input_image_fake, seed=3, progress=False).frames
    want = numpy_pipeline().generate(input_image_fake, seed=3, progress=False).frames
    assert np.all(np.isfinite(frames)) and frames.shape == want.shape
    # frames in [0, 1]: the bound of the e2e bf16 check (test_e2e_parity.py) holds here too
    assert float(np.abs(frames - want).max()) <= 0.1


@pytest.fixture(scope="module")
def input_image_fake() -> np.ndarray:
    from svdref.diffusers_tiny import make_image

    return make_image(H, W)


def test_bf16_refused_without_cpu_support(artifact, no_bf16_cpu):
    with pytest.raises(
        BackendError,
        match=r"precision 'bf16' needs a CPU with native bf16.*"
        r"FP32, INT8.*use --precision fp32",
    ):
        VideoPipeline.load(artifact, backend="openvino", precision="bf16")
    assert VideoPipeline.load(artifact, backend="openvino", precision="auto").precision == "fp32"


def test_auto_is_fp32(artifact):
    """bf16's error is model-dependent (runtime README), so auto never picks it."""
    manifest = read_manifest(artifact, verify_hashes=False)
    for backend in ("openvino", "onnxruntime", "mindspore"):
        assert resolve_precision(backend, manifest, "auto") == "fp32"
        assert resolve_precision(backend, manifest, None) == "fp32"
    assert VideoPipeline.load(artifact, backend="openvino").precision == "fp32"


def test_other_backends_refuse_bf16_clearly(artifact):
    with pytest.raises(
        BackendError,
        match=r"backend 'onnxruntime' cannot run precision 'bf16'.*"
        r"--backend openvino",
    ):
        load_artifact(artifact, backend="onnxruntime", precision="bf16")
    with pytest.raises(
        BackendError,
        match=r"backend 'mindspore' runs the MindIR graphs in the "
        r"precision they were exported with \(fp32\), not 'bf16'",
    ):
        load_artifact(artifact, backend="mindspore", precision="bf16")
    with pytest.raises(
        InputError, match=r"precision 'fp8' is unknown; expected one of fp32, bf16, auto"
    ):
        load_artifact(artifact, backend="onnxruntime", precision="fp8")
    assert load_artifact(artifact, backend="onnxruntime", precision="auto").precision == "fp32"
    assert load_artifact(artifact, backend="onnxruntime", precision="fp32").precision == "fp32"


def test_compile_cache_is_written_then_reused(artifact, private_cache):
    manifest = read_manifest(artifact, verify_hashes=False)
    entry = manifest.graph("unet", "onnx")
    first = OpenVINOBackend("fp32", private_cache)
    first.load(entry, artifact / entry.file, manifest)
    assert [p.name for p in private_cache.iterdir()] == ["fp32"]  # one folder per precision
    blob_dir = private_cache / "fp32"
    blobs = sorted(blob_dir.iterdir())
    assert blobs and first.loaded_from_cache == {"unet.onnx": False}
    second = OpenVINOBackend("fp32", private_cache)
    second.load(entry, artifact / entry.file, manifest)
    assert second.loaded_from_cache == {"unet.onnx": True}
    assert sorted(blob_dir.iterdir()) == blobs  # reused, nothing new written
    # the whole artifact through load_artifact: one blob per graph file, all reused next time
    load_artifact(artifact, backend="openvino", precision="fp32")
    files = sorted(blob_dir.iterdir())
    assert len(files) == len([g for g in manifest.graphs if g.format == "onnx"]) == 5
    loader = graph_loader("openvino", "fp32")
    assert loader.__self__.cache_dir == private_cache  # type: ignore[attr-defined]
    for name in ("image_encoder", "vae_encoder", "unet", "vae_decoder", "vae_decoder_tail"):
        e = manifest.graph(name, "onnx")
        loader(e, artifact / e.file, manifest)
    assert all(loader.__self__.loaded_from_cache.values())  # type: ignore[attr-defined]
    assert sorted(blob_dir.iterdir()) == files


def test_cache_can_be_disabled(artifact, monkeypatch, tmp_path):
    monkeypatch.setenv("SVDEPLOY_OPENVINO_CACHE", "")
    loader = graph_loader("openvino", "fp32")
    assert loader.__self__.cache_dir is None  # type: ignore[attr-defined]
    assert "CACHE_DIR" not in loader.__self__.config()  # type: ignore[attr-defined]
    assert loader.__self__.config()["INFERENCE_PRECISION_HINT"] == "f32"  # type: ignore[attr-defined]


def test_svd_run_records_backend_and_precision(artifact, tmp_path, input_image_fake):
    image = tmp_path / "in.png"
    Image.fromarray(input_image_fake).save(image)
    out = tmp_path / "frames.npy"
    result = CliRunner().invoke(
        run_cli,
        [
            str(artifact),
            "--image",
            str(image),
            "--out",
            str(out),
            "--steps",
            "2",
            "--seed",
            "3",
            "--backend",
            "openvino",
            "--precision",
            "fp32",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    sidecar = json.loads(Path(str(out) + ".json").read_text())
    assert (sidecar["backend"], sidecar["precision"]) == ("openvino", "fp32")
    want = (
        numpy_pipeline()
        .generate(np.asarray(Image.open(image)), seed=3, num_inference_steps=2, progress=False)
        .frames
    )
    assert np.abs(np.load(out) - want).max() < 1e-4
    refused = CliRunner().invoke(
        run_cli,
        [
            str(artifact),
            "--image",
            str(image),
            "--out",
            str(tmp_path / "x.npy"),
            "--backend",
            "onnxruntime",
            "--precision",
            "bf16",
        ],
    )
    assert refused.exit_code == 2
    assert refused.output.startswith("error: backend 'onnxruntime' cannot run precision 'bf16'")
