"""svd-export: tiny exports of all graphs in both formats, validation, the manifest contract,
tamper and version checks, bad checkpoints, atomicity, Ascend files and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from click.testing import CliRunner

from svdeploy.config import load_model_config, save_model_config
from svdeploy.config import replace as cfg_replace
from svdeploy.errors import CheckpointError, ConfigError, ExportError, ManifestError
from svdeploy.export import api as export_api
from svdeploy.export import export_artifact
from svdeploy.export.cli import main as export_cli
from svdeploy.kernels.probe import fastest_conv
from svdeploy.manifest import MANIFEST_NAME, read_manifest
from svdeploy.models.convert import convert_checkpoint
from svdeploy.models.random_weights import write_random_sgm_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export-ckpt")
    src = write_random_sgm_file(load_model_config("tiny"), root / "tiny.safetensors", seed=1)
    out = root / "checkpoint"
    convert_checkpoint(src, out, config="tiny", progress=False)
    return out


@pytest.fixture(scope="module")
def artifact(checkpoint, tmp_path_factory):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    out = tmp_path_factory.mktemp("export-art") / "artifact"
    result = export_artifact(
        checkpoint, out, formats=("mindir", "onnx"), decode_chunk_size=3, progress=False
    )
    return out, result


def test_all_graphs_exported_and_validated(artifact):
    out, result = artifact
    manifest = read_manifest(out)
    names = {(g.name, g.format) for g in manifest.graphs}
    expected = {
        (n, f)
        for n in ("image_encoder", "vae_encoder", "unet", "vae_decoder", "vae_decoder_tail")
        for f in ("mindir", "onnx")
    }
    assert names == expected  # 4 frames, chunk 3 → a tail graph of 1 frame
    for g in manifest.graphs:
        assert g.parity_max_rel_error is not None and g.parity_max_rel_error <= 1e-4, g
        assert g.parity_tolerance == 1e-4 and g.export_seconds > 0
        assert (out / g.file).is_file()
    unet = manifest.graph("unet", "onnx")
    assert [t.name for t in unet.inputs] == ["sample", "c_noise", "context", "time_ids"]
    assert [t.shape for t in unet.inputs] == [(8, 8, 32, 32), (1,), (2, 1, 32), (2, 3)]
    assert manifest.graph("vae_decoder_tail", "mindir").inputs[0].shape == (1, 4, 32, 32)
    assert manifest.decode_chunk_size == 3 and manifest.guidance_batch == 2 and manifest.cfg
    assert manifest.scheduler == {
        "sigma_min": 0.002,
        "sigma_max": 700.0,
        "rho": 7.0,
        "scaling_factor": 0.18215,
    }
    assert manifest.latent_shape == (4, 4, 32, 32)
    assert len(result.reports) == 10 and all(r.passed for r in result.reports)


def test_manifest_round_trips(artifact):
    out, result = artifact
    data = json.loads((out / MANIFEST_NAME).read_text())
    again = read_manifest(out)
    assert again.to_json() == data == result.manifest.to_json()


def test_onnx_graph_has_erf_and_fused_norms(artifact):
    import onnx

    out, _ = artifact
    model = onnx.load(str(out / "unet.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert "Erf" in ops and "Acos" not in ops
    assert "LayerNormalization" in ops and "ReduceSumSquare" not in ops
    assert [o.name for o in model.graph.output] == ["v"]
    # every self-attention became ONNX Runtime's fused kernel; no softmax is left over
    assert "MultiHeadAttention" in ops and "Softmax" not in ops
    assert any(o.domain == "com.microsoft" for o in model.opset_import)
    clip = onnx.load(str(out / "image_encoder.onnx"))
    assert "Softmax" not in [n.op_type for n in clip.graph.node]


def test_tampered_graph_is_refused(artifact, tmp_path):
    import shutil

    out, _ = artifact
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "vae_encoder.onnx", "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ManifestError, match="vae_encoder.onnx.*sha256"):
        read_manifest(copy)


def test_unknown_manifest_version_is_refused(artifact, tmp_path):
    import shutil

    out, _ = artifact
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = json.loads((copy / MANIFEST_NAME).read_text())
    data["format_version"] = 99
    (copy / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="format_version 99"):
        read_manifest(copy)


def test_checkpoint_without_config_is_refused(checkpoint, tmp_path):
    import shutil

    bad = tmp_path / "noconfig"
    shutil.copytree(checkpoint, bad)
    (bad / "config.yaml").unlink()
    with pytest.raises(CheckpointError, match="config.yaml"):
        export_artifact(bad, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_weights_that_do_not_fit_are_refused(checkpoint, tmp_path):
    import shutil

    bad = tmp_path / "misfit"
    shutil.copytree(checkpoint, bad)
    cfg = load_model_config(bad / "config.yaml")
    save_model_config(
        cfg_replace(cfg, unet=cfg_replace(cfg.unet, model_channels=64)), bad / "config.yaml"
    )
    with pytest.raises(CheckpointError, match="mis-shaped"):
        export_artifact(bad, tmp_path / "out", graphs=("unet",), progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial")]


def test_bad_settings_are_refused(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="decode-chunk-size 9"):
        export_artifact(checkpoint, tmp_path / "o", decode_chunk_size=9, progress=False)
    with pytest.raises(ConfigError, match="height = 62"):  # tiny needs multiples of 4
        export_artifact(checkpoint, tmp_path / "o", height=62, progress=False)
    with pytest.raises(ConfigError, match="bf16 with --format onnx"):
        export_artifact(checkpoint, tmp_path / "o", formats=("onnx",), dtype="bf16", progress=False)
    with pytest.raises(ConfigError, match="--conv im2col: only MindIR graphs for --target cpu"):
        export_artifact(
            checkpoint, tmp_path / "o", formats=("onnx",), conv="im2col", progress=False
        )
    with pytest.raises(ConfigError, match="--conv 'fft'"):
        export_artifact(checkpoint, tmp_path / "o", conv="fft", progress=False)
    assert not (tmp_path / "o").exists()


def test_im2col_convolutions_export_validated_and_recorded(checkpoint, artifact, tmp_path):
    out = tmp_path / "im2col"
    result = export_artifact(
        checkpoint, out, formats=("mindir",), graphs=("vae_encoder",), conv="im2col", progress=False
    )
    assert result.reports[0].parity_max_rel_error <= 1e-4
    recorded = read_manifest(out).graph("vae_encoder", "mindir").extra["kernels"]
    assert recorded["conv"] == "im2col" and recorded["group_norm"] == "layernorm"
    # the default export (--conv auto) timed both kernels here and used the faster for MindIR;
    # ONNX graphs keep the native convolution
    default = read_manifest(artifact[0])
    probe = default.extra["conv_probe_seconds"]
    assert set(probe) == {"native", "im2col"} and all(v > 0 for v in probe.values())
    chosen = min(probe, key=probe.__getitem__)
    assert chosen == fastest_conv()
    assert {g.extra["kernels"]["conv"] for g in default.graphs if g.format == "mindir"} == {chosen}
    assert {g.extra["kernels"]["conv"] for g in default.graphs if g.format == "onnx"} == {"native"}
    assert default.graph("unet", "onnx").extra["kernels"]["gelu"] == "onnx_erf"
    # temporal (k,1,1) convolutions run as GEMMs in CPU MindIR graphs
    assert default.graph("vae_decoder", "mindir").extra["kernels"]["temporal_conv"] == "matmul"
    assert recorded["temporal_conv"] == "matmul"


def test_explicit_conv_is_not_probed(checkpoint, tmp_path):
    out = tmp_path / "native"
    export_artifact(
        checkpoint,
        out,
        formats=("mindir",),
        graphs=("image_encoder",),
        conv="native",
        validate=False,
        progress=False,
    )
    manifest = read_manifest(out)
    assert manifest.extra["conv_probe_seconds"] == {}
    assert manifest.graph("image_encoder", "mindir").extra["kernels"]["conv"] == "native"


def test_existing_output_needs_overwrite(checkpoint, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "something.txt").write_text("keep me")
    with pytest.raises(ExportError, match="--overwrite"):
        export_artifact(checkpoint, out, progress=False)
    assert (out / "something.txt").read_text() == "keep me"


def test_validation_failure_lists_every_graph_and_leaves_nothing(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(export_api.resolve_settings.__globals__["TOLERANCE"], "fp32", 0.0)
    out = tmp_path / "failed"
    with pytest.raises(ExportError) as info:
        export_artifact(
            checkpoint, out, formats=("onnx",), graphs=("vae_encoder", "unet"), progress=False
        )
    message = str(info.value)
    assert "vae_encoder.onnx" in message and "unet.onnx" in message
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def _patched_onnxruntime_loader(monkeypatch, change):
    """Wrap the runtime's ONNX Runtime loader (the one svd-run uses) so that ``change`` edits
    every output list; returns the (entry, manifest) pairs it loaded."""
    from svdeploy.runtime import backends

    real = backends._load_onnxruntime
    loaded = []

    def loader(entry, path, manifest):
        loaded.append((entry, manifest))
        run = real(entry, path, manifest)
        return lambda inputs: change(list(run(inputs)))

    monkeypatch.setitem(backends._LOADERS, "onnxruntime", loader)
    return loaded


def test_validation_runs_the_graph_through_the_runtimes_loader(checkpoint, tmp_path, monkeypatch):
    """What is validated is what svd-run runs: corrupting the runtime's ONNX Runtime outputs
    fails the export's parity check of that graph."""
    loaded = _patched_onnxruntime_loader(monkeypatch, lambda outs: [o + 1.0 for o in outs])
    out = tmp_path / "corrupted"
    with pytest.raises(
        ExportError,
        match=r"vae_encoder\.onnx: max relative error \S+ > "
        r"tolerance 1e-04",
    ):
        export_artifact(checkpoint, out, formats=("onnx",), graphs=("vae_encoder",), progress=False)
    assert not out.exists()
    [(entry, manifest)] = loaded
    assert (entry.name, entry.format, entry.file) == ("vae_encoder", "onnx", "vae_encoder.onnx")
    assert manifest.target == "cpu" and manifest.variant == "tiny" and manifest.graphs == []


def test_validation_holds_outputs_to_the_manifest_entry(checkpoint, tmp_path, monkeypatch):
    """The runtime's CheckedGraph runs at export: an output whose dtype differs from the entry
    export writes is refused, though its values are right."""
    _patched_onnxruntime_loader(monkeypatch, lambda outs: [o.astype(np.float64) for o in outs])
    with pytest.raises(
        ExportError,
        match=r"^validating vae_encoder\.onnx with ONNX Runtime failed: "
        r"graph 'vae_encoder' output 'latent': got float64",
    ):
        export_artifact(
            checkpoint, tmp_path / "f64", formats=("onnx",), graphs=("vae_encoder",), progress=False
        )
    assert not list(tmp_path.iterdir())


def test_killed_export_leaves_no_artifact(checkpoint, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "svdeploy.export.cli",
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--format",
            "both",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    # kill as soon as the first graph file exists in the temporary directory
    while time.time() < deadline and proc.poll() is None:
        partial = [p for p in tmp_path.iterdir() if p.name.startswith(".killed.partial")]
        if partial and any(partial[0].iterdir()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "export finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    for leftover in tmp_path.iterdir():  # only a hidden partial directory, never a manifest
        assert leftover.name.startswith(".killed.partial")
        assert not (leftover / MANIFEST_NAME).exists()
    with pytest.raises(ManifestError):
        read_manifest(out)


def test_ascend_target_writes_converter_files(checkpoint, tmp_path):
    out = tmp_path / "ascend"
    result = export_artifact(
        checkpoint,
        out,
        target="ascend",
        formats=("mindir",),
        graphs=("vae_encoder",),
        progress=False,
    )
    cfg_text = (out / "ascend" / "vae_encoder.cfg").read_text()
    assert "[ascend_context]" in cfg_text and "input_format=NCHW" in cfg_text
    assert "precision_mode=enforce_fp32" in cfg_text
    script = (out / "ascend" / "convert.sh").read_text()
    assert "converter_lite --fmk=MINDIR --modelFile=vae_encoder.mindir" in script
    assert "--inputShape=image:1,3,64,64" in script and "--optimize=ascend_oriented" in script
    assert os.access(out / "ascend" / "convert.sh", os.X_OK)
    manifest = read_manifest(out)
    assert manifest.target == "ascend" and manifest.extra["partial"] is True
    assert result.ascend_commands["vae_encoder"].startswith("converter_lite")


def test_fp16_graphs_stay_close(checkpoint, tmp_path):
    out = tmp_path / "fp16"
    result = export_artifact(
        checkpoint,
        out,
        dtype="fp16",
        formats=("mindir", "onnx"),
        graphs=("vae_decoder",),
        progress=False,
    )
    for report in result.reports:
        assert report.tolerance == 1e-2
        # half precision is measurably different from float32, but within its bound
        assert 1e-6 < report.parity_max_rel_error <= 1e-2


def test_partial_artifact_is_refused_by_the_runtime(checkpoint, tmp_path):
    from svdeploy.runtime import VideoPipeline

    out = tmp_path / "partial"
    export_artifact(checkpoint, out, formats=("onnx",), graphs=("vae_encoder",), progress=False)
    with pytest.raises(ManifestError):
        VideoPipeline.load(out)


def test_cli_help_and_errors(checkpoint, tmp_path):
    runner = CliRunner()
    result = runner.invoke(export_cli, ["--help"])
    assert result.exit_code == 0
    for option in (
        "--checkpoint",
        "--out",
        "--frames",
        "--height",
        "--width",
        "--cfg / --no-cfg",
        "--decode-chunk-size",
        "--format",
        "--dtype",
        "--target",
        "--conv",
        "--validate",
    ):
        assert option in result.output
    result = runner.invoke(
        export_cli, ["--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and "does not exist" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_exports_no_cfg(checkpoint, tmp_path):
    out = tmp_path / "nocfg"
    result = CliRunner().invoke(
        export_cli,
        [
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--no-cfg",
            "--format",
            "onnx",
            "--frames",
            "3",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest.guidance_batch == 1 and not manifest.cfg and manifest.num_frames == 3
    assert manifest.graph("unet", "onnx").inputs[0].shape == (3, 8, 32, 32)
    assert manifest.defaults["max_guidance_scale"] == 1.0
    assert "artifact:" in result.output and "unet" in result.output
    ms.set_context(mode=ms.PYNATIVE_MODE)
