"""MindSpore Lite, executed: conversion, per-graph parity, end-to-end parity with diffusers, the
worker's protocol and errors, tamper and version refusals.

The Lite tests run against a Python 3.7 venv with mindspore-lite 2.0.0 (svdref.lite_env builds
and caches it in .venv-lite37); they are skipped, saying so, only where no Python 3.7 exists.
The protocol and interpreter-error tests need no Lite at all and always run.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from svdeploy.errors import BackendError, ManifestError
from svdeploy.runtime import lite_worker
from svdeploy.runtime.lite import WORKER_PATH, open_lite
from svdref.lite_env import NO_PYTHON37, find_python37, lite_venv_python

FRAMES, STEPS, SIZE, CHUNK = 5, 3, 64, 2


@pytest.fixture(scope="session")
def lite_python() -> str:
    base = find_python37()
    if base is None:
        pytest.skip(NO_PYTHON37)
    return str(lite_venv_python(base))


# ---------------------------------------------------------------------------------------------
# Without Lite: the protocol and the interpreter errors
# ---------------------------------------------------------------------------------------------
def test_protocol_round_trip_without_pickle():
    stream = io.BytesIO()
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7], np.int64)]
    lite_worker.write_message(stream, {"op": "run", "handle": 1}, arrays)
    stream.seek(0)
    header, got = lite_worker.read_message(stream)
    assert header["op"] == "run" and header["arrays"][0] == {"dtype": "float32", "shape": [2, 3]}
    assert [a.dtype for a in got] == [np.float32, np.int64]
    np.testing.assert_array_equal(got[0], arrays[0])
    assert lite_worker.read_message(stream) is None  # clean end of stream


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"dtype": "object", "shape": [1]}, "dtype 'object' is not one of"),
        ({"dtype": "float32", "shape": [-1]}, "must be a list of non-negative integers"),
        ({"dtype": "float32", "shape": [1 << 20, 1 << 20]}, "above the limit"),
    ],
)
def test_protocol_refuses_bad_array_descriptions(meta, message):
    raw = json.dumps({"op": "run", "arrays": [meta]}).encode()
    with pytest.raises(lite_worker.WorkerError, match=message):
        lite_worker.read_message(io.BytesIO(struct.pack(">I", len(raw)) + raw))


def test_missing_and_broken_interpreters_give_one_clear_error(tmp_path):
    with pytest.raises(
        BackendError, match=r"interpreter '/nonexistent/python3.7' cannot be started"
    ):
        open_lite("/nonexistent/python3.7")
    if _imports(sys.executable, "mindspore_lite"):
        pytest.skip("mindspore_lite imports in svdeploy's Python: no interpreter without it here")
    with pytest.raises(
        BackendError,
        match=r"cannot serve svdeploy: .*No module named "
        r"'mindspore_lite'.*--lite-python",
    ):
        open_lite(sys.executable)


def test_svd_run_names_a_missing_lite_interpreter(tmp_path):
    from svdeploy.runtime.cli import main as run_cli
    from svdref.fake_artifact import build_fake_artifact

    artifact = build_fake_artifact(tmp_path / "fake")
    image = Path(__file__).resolve().parents[1] / "svdeploy" / "assets" / "sample.png"
    result = CliRunner().invoke(
        run_cli,
        [
            str(artifact),
            "--image",
            str(image),
            "--out",
            str(tmp_path / "o.npy"),
            "--backend",
            "lite",
            "--lite-python",
            "/nonexistent/py",
        ],
    )
    assert result.exit_code == 2
    assert "error: MindSpore Lite interpreter '/nonexistent/py' cannot be started" in result.output
    assert not (tmp_path / "o.npy").exists()


def test_format_is_a_comma_separated_list():
    from svdeploy.errors import ConfigError
    from svdeploy.export.specs import parse_formats

    assert parse_formats("both") == ("mindir", "onnx")
    assert parse_formats("onnx, lite,onnx") == ("onnx", "lite")
    with pytest.raises(
        ConfigError,
        match=r"'tflite' is not a format; expected a comma-separated "
        r"list of mindir, onnx, lite",
    ):
        parse_formats("onnx,tflite")


def _imports(python: str, module: str) -> bool:
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


# ---------------------------------------------------------------------------------------------
# The op Lite 2.0 mis-converts: Resize without its mode attribute
# ---------------------------------------------------------------------------------------------
def _upsample_onnx(path: Path) -> None:
    import mindspore as ms
    from mindspore import nn

    from svdeploy.kernels.linear import upsample_nearest2x

    class Up(nn.Cell):
        def construct(self, x):
            return upsample_nearest2x(x)

    ms.export(
        Up(),
        ms.Tensor(np.zeros((2, 4, 8, 8), np.float32)),
        file_name=str(path.with_suffix("")),
        file_format="ONNX",
    )


def test_resize_nearest_converts_correctly_once_its_mode_is_written(lite_python, tmp_path):
    """MindSpore writes nearest ×2 upsampling as a Resize without ``mode`` (ONNX default:
    nearest); Lite 2.0's converter reads the missing mode as linear. onnx_passes writes it out."""
    import onnx

    from svdeploy.export.onnx_passes import explicit_resize_mode

    raw = tmp_path / "up.onnx"
    _upsample_onnx(raw)
    x = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    want = x.repeat(2, axis=2).repeat(2, axis=3)
    model = onnx.load(str(raw))
    assert [n.op_type for n in model.graph.node if n.op_type == "Resize"] == ["Resize"]
    assert explicit_resize_mode(model.graph) == 1
    fixed = tmp_path / "up_fixed.onnx"
    onnx.save(model, str(fixed))
    lite = open_lite(lite_python)
    try:
        errors = {}
        for name, path in (("as MindSpore writes it", raw), ("mode written out", fixed)):
            graph = lite.load(lite.convert(path, tmp_path / f"{path.stem}_lite"))
            got = graph.run([x])[0]
            errors[name] = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    finally:
        lite.close()
    print(f"\nResize through MindSpore Lite {lite.version}, rel L2 against nearest ×2: {errors}")
    assert errors["mode written out"] == 0.0
    if lite.version == "2.0.0":  # the converter bug this export works around
        assert errors["as MindSpore writes it"] > 0.05


# ---------------------------------------------------------------------------------------------
# A real tiny artifact: conversion, parity, end to end, refusals
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lite_setup(lite_python, tmp_path_factory):
    torch = pytest.importorskip("torch")  # test extra, installed in CI
    import mindspore as ms
    from PIL import Image

    from svdeploy.export import export_artifact
    from svdeploy.models.convert import convert_checkpoint
    from svdref import diffusers_tiny as ref
    from svdref.checkpoints import save_diffusers_folder

    torch.set_num_threads(2)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    root = tmp_path_factory.mktemp("lite")
    pipe = ref.build_tiny_pipeline(seed=5)
    checkpoint = root / "checkpoint"
    components = dict(unet=pipe.unet, vae=pipe.vae, image_encoder=pipe.image_encoder)
    convert_checkpoint(
        save_diffusers_folder(components, root / "diffusers"), checkpoint, progress=False
    )
    artifact = root / "artifact"
    result = export_artifact(
        checkpoint,
        artifact,
        frames=FRAMES,
        height=SIZE,
        width=SIZE,
        decode_chunk_size=CHUNK,
        formats=("lite",),
        progress=False,
        lite_python=lite_python,
    )
    image = ref.make_image(SIZE, SIZE)
    Image.fromarray(image).save(root / "image.png")
    rng = np.random.default_rng(11)
    noise = dict(
        image_noise=rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32),
        latents=rng.standard_normal((1, FRAMES, 4, SIZE // 2, SIZE // 2)).astype(np.float32),
    )
    np.savez(root / "noise.npz", **noise)
    return dict(pipe=pipe, artifact=artifact, result=result, image=image, root=root, **noise)


@pytest.mark.slow
def test_lite_graphs_are_stored_with_hash_version_and_parity(lite_setup):
    from svdeploy.manifest import read_manifest, sha256_file

    artifact = lite_setup["artifact"]
    manifest = read_manifest(artifact)
    names = {g.name for g in manifest.graphs}
    assert names == {"image_encoder", "vae_encoder", "unet", "vae_decoder", "vae_decoder_tail"}
    for entry in manifest.graphs:
        assert entry.format == "lite" and entry.file == f"{entry.name}_lite.mindir"
        assert entry.sha256 == sha256_file(artifact / entry.file)
        assert entry.extra["lite_version"] == "2.0.0"
        assert entry.extra["converted_from"] == "onnx"
        print(f"\n{entry.name}: Lite parity {entry.parity_max_rel_error:.2e}")
        # the U-Net and the decoder carry the ×2 Resize that converted wrongly before the fix
        assert entry.parity_max_rel_error <= entry.parity_tolerance == 1e-4
    assert not list(artifact.glob("*.onnx")) and not (artifact / ".lite-source").exists()


@pytest.mark.slow
def test_svd_run_lite_matches_diffusers(lite_setup, lite_python):
    from PIL import Image

    from svdeploy.runtime.cli import main as run_cli
    from svdref import diffusers_tiny as ref

    s = lite_setup
    want = ref.run_with_noise(
        s["pipe"],
        Image.fromarray(s["image"]),
        s["image_noise"],
        s["latents"],
        height=SIZE,
        width=SIZE,
        num_frames=FRAMES,
        num_inference_steps=STEPS,
        fps=7,
        motion_bucket_id=127,
        noise_aug_strength=0.02,
        min_guidance_scale=1.0,
        max_guidance_scale=3.0,
        decode_chunk_size=CHUNK,
    )[0]
    out = s["root"] / "frames-lite.npy"
    result = CliRunner().invoke(
        run_cli,
        [
            str(s["artifact"]),
            "--image",
            str(s["root"] / "image.png"),
            "--out",
            str(out),
            "--steps",
            str(STEPS),
            "--noise",
            str(s["root"] / "noise.npz"),
            "--backend",
            "lite",
            "--lite-python",
            lite_python,
            "--fps",
            "7",
            "--motion-bucket-id",
            "127",
            "--noise-aug-strength",
            "0.02",
            "--min-guidance-scale",
            "1.0",
            "--max-guidance-scale",
            "3.0",
        ],
    )
    assert result.exit_code == 0, result.output
    got = np.load(out)
    diff = float(np.abs(got - want).max())
    print(f"\n[lite {lite_python}] max |frames − diffusers| = {diff:.2e}")
    assert got.shape == want.shape and diff <= 1e-3
    assert want.std() > 0.01
    assert json.loads((out.parent / (out.name + ".json")).read_text())["backend"] == "lite"


@pytest.mark.slow
def test_tampered_lite_graph_is_refused(lite_setup, lite_python, tmp_path):
    from svdeploy.runtime import VideoPipeline

    copy = Path(shutil.copytree(lite_setup["artifact"], tmp_path / "tampered"))
    data = bytearray((copy / "unet_lite.mindir").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "unet_lite.mindir").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"'unet_lite.mindir' has sha256 .*modified"):
        VideoPipeline.load(copy, backend="lite", lite_python=lite_python)


@pytest.mark.slow
def test_graph_converted_by_a_newer_lite_is_refused(lite_setup, lite_python, tmp_path):
    from svdeploy.runtime import VideoPipeline

    copy = Path(shutil.copytree(lite_setup["artifact"], tmp_path / "newer"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["graphs"][0]["extra"]["lite_version"] = "9.1.0"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        BackendError,
        match=r"converted by MindSpore Lite 9.1.0; the Lite here "
        r"\(worker in .*\) is 2.0.0.*Lite ≥ 9.1.0",
    ):
        VideoPipeline.load(copy, backend="lite", lite_python=lite_python)


@pytest.mark.slow
def test_worker_reports_bad_inputs_and_keeps_serving(lite_setup, lite_python):
    lite = open_lite(lite_python)
    try:
        graph = lite.load(lite_setup["artifact"] / "vae_decoder_lite.mindir")
        z = np.zeros((CHUNK, 4, SIZE // 2, SIZE // 2), np.float32)
        with pytest.raises(
            BackendError,
            match=r"input 'z': got float32 \[1, 4, 32, 32\], the "
            r"graph takes float32 \[2, 4, 32, 32\]",
        ):
            graph.run([z[:1]])
        with pytest.raises(BackendError, match=r"got float64 .*takes float32"):
            graph.run([z.astype(np.float64)])
        with pytest.raises(BackendError, match=r"got 2 input arrays, the graph takes 1"):
            graph.run([z, z])
        with pytest.raises(BackendError, match=r"no Lite graph at '/nonexistent.mindir'"):
            lite.load(Path("/nonexistent.mindir"))
        assert graph.run([z])[0].shape == (CHUNK, 3, SIZE, SIZE)  # still serving
    finally:
        lite.close()


@pytest.mark.slow
def test_worker_answers_garbage_with_an_error_and_exits(lite_python):
    raw = b"not json at all"
    proc = subprocess.run(
        [lite_python, str(WORKER_PATH), "serve"],
        input=struct.pack(">I", len(raw)) + raw,
        capture_output=True,
        timeout=120,
    )
    reply, _ = lite_worker.read_message(io.BytesIO(proc.stdout))
    assert reply["ok"] is False and "header is not UTF-8 JSON" in reply["error"]
    assert proc.returncode == 3


@pytest.mark.slow
def test_ascend_pairing_and_host_validation_command(lite_setup, lite_python, tmp_path):
    """--target ascend stores reference outputs and a validation command. No Ascend host
    here: the Lite CPU graph stands in for converter_lite's output, run with --target cpu."""
    import mindspore as ms

    from svdeploy.export import export_artifact
    from svdeploy.manifest import read_manifest

    out = tmp_path / "ascend"
    export_artifact(
        lite_setup["root"] / "checkpoint",
        out,
        frames=FRAMES,
        height=SIZE,
        width=SIZE,
        target="ascend",
        formats=("mindir", "lite"),
        graphs=("vae_encoder",),
        progress=False,
        lite_python=lite_python,
    )
    manifest = read_manifest(out)
    assert manifest.extra["ascend_version_pairing"]["requires_lite"] == f">= {ms.__version__}"
    assert f"MindSpore Lite >= {ms.__version__}" in (out / "ascend" / "convert.sh").read_text()
    case = manifest.extra["reference_outputs"]["vae_encoder"]
    assert case["graph"] == "vae_encoder_ascend.mindir" and (out / case["file"]).is_file()
    command = manifest.extra["ascend_validate_command"]
    assert command in (out / "ascend" / "validate.sh").read_text()
    assert "validate . --target ascend --graph-dir ascend" in command
    shutil.copyfile(out / "vae_encoder_lite.mindir", out / "ascend" / "vae_encoder_ascend.mindir")
    args = [
        lite_python,
        "ascend/lite_worker.py",
        "validate",
        ".",
        "--target",
        "cpu",
        "--graph-dir",
        "ascend",
    ]
    good = subprocess.run(args, cwd=out, capture_output=True, text=True, timeout=300)
    assert good.returncode == 0, good.stdout + good.stderr[-2000:]
    assert "vae_encoder" in good.stdout and "ok" in good.stdout
    data = dict(np.load(out / case["file"]))
    data["output_0"] = data["output_0"] * 1.01  # a graph 1 % off must be caught
    np.savez(out / case["file"], **data)
    bad = subprocess.run(args, cwd=out, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "FAILED" in bad.stdout
