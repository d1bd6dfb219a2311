"""svd-run --plan / --max-memory: the plan's arithmetic, sizes, the refusal (one clear line,
nothing written, before any graph is loaded) and, on the exported tiny preset, the plan
against the measured peak RSS of a separate process (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from svdeploy.errors import InputError, MemoryLimitError
from svdeploy.runtime.cli import main
from svdeploy.runtime.plan import (
    STAGES,
    check_memory_limit,
    largest_fitting_chunk,
    parse_size,
    plan_for_artifact,
    plan_memory,
)
from svdref.diffusers_tiny import make_image
from svdref.fake_artifact import H, W, build_fake_artifact, numpy_manifest

GRAPH_BYTES = {
    "image_encoder": 10 << 20,
    "vae_encoder": 20 << 20,
    "unet": 300 << 20,
    "vae_decoder": 50 << 20,
    "vae_decoder_tail": 50 << 20,
}


def test_parse_size_units():
    assert parse_size("1024") == 1024
    assert parse_size("8GiB") == 8 << 30 and parse_size("2GB") == 2_000_000_000
    assert parse_size("512MiB") == 512 << 20 and parse_size("1.5G") == 3 << 29
    for bad in ("", "8 parsecs", "-1", "0", "GiB"):
        with pytest.raises(InputError, match="memory size"):
            parse_size(bad)


def test_plan_stages_grow_with_chunk_clips_and_are_deterministic():
    manifest = numpy_manifest()
    plan = plan_memory(manifest, GRAPH_BYTES, "onnxruntime")
    assert set(plan.stages) == set(STAGES) and plan.peak_bytes == max(plan.stages.values())
    assert plan == plan_memory(manifest, GRAPH_BYTES, "onnxruntime")
    smaller = plan_memory(manifest, GRAPH_BYTES, "onnxruntime", decode_chunk=1)
    assert smaller.stages["decode"] < plan.stages["decode"]
    assert smaller.stages["denoise"] == plan.stages["denoise"]
    chained = plan_memory(manifest, GRAPH_BYTES, "onnxruntime", clips=4)
    assert chained.frames_out == 4 * (manifest.num_frames - 1) + 1
    assert chained.stages["decode"] > plan.stages["decode"]
    # more graph bytes → more resident memory in every stage
    bigger = plan_memory(manifest, {k: 2 * v for k, v in GRAPH_BYTES.items()}, "onnxruntime")
    assert all(bigger.stages[s] > plan.stages[s] for s in STAGES)
    line = json.loads(plan.json_line())
    assert line["peak_bytes"] == plan.peak_bytes and set(line["stages"]) == set(STAGES)


def test_limit_names_the_stage_and_the_largest_fitting_chunk():
    manifest = numpy_manifest()
    plan = plan_memory(manifest, GRAPH_BYTES, "onnxruntime")
    check_memory_limit(plan, plan.peak_bytes)  # at the limit: allowed
    one = plan_memory(manifest, GRAPH_BYTES, "onnxruntime", decode_chunk=1)
    assert one.peak_bytes < plan.peak_bytes
    limit = one.peak_bytes  # only 1-frame chunks fit
    assert largest_fitting_chunk(plan, limit) == 1
    with pytest.raises(
        MemoryLimitError,
        match=r"in the decode stage .*largest decode chunk "
        r"that fits is 1 frame\(s\)",
    ):
        check_memory_limit(plan, limit)
    with pytest.raises(MemoryLimitError, match="in the load stage"):
        check_memory_limit(plan, plan.stages["load"] - 1)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    return build_fake_artifact(tmp_path_factory.mktemp("plan_artifact"))


def test_cli_plan_prints_stages_and_one_json_line_and_writes_nothing(artifact, tmp_path):
    image = tmp_path / "in.png"
    Image.fromarray(make_image(H, W)).save(image)
    out = tmp_path / "video.mp4"
    result = CliRunner().invoke(
        main,
        [
            str(artifact),
            "-i",
            str(image),
            "-o",
            str(out),
            "--plan",
            "--backend",
            "onnxruntime",
            "--clips",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    data = json.loads(lines[-1])
    assert data["peak_bytes"] == max(data["stages"].values()) and data["frames"] == 9
    for stage in STAGES:
        assert any(line.strip().startswith(stage) for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_cli_max_memory_refuses_before_loading_and_writes_nothing(artifact, tmp_path):
    image = tmp_path / "in.png"
    Image.fromarray(make_image(H, W)).save(image)
    out = tmp_path / "video.mp4"
    plan = plan_for_artifact(artifact, backend="onnxruntime")
    result = CliRunner().invoke(
        main,
        [
            str(artifact),
            "-i",
            str(image),
            "-o",
            str(out),
            "--backend",
            "onnxruntime",
            "--max-memory",
            str(plan.peak_bytes - 1),
        ],
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the predicted peak resident memory")
    assert (
        f"in the {plan.peak_stage} stage" in lines[0] and "Nothing was run or written" in lines[0]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]
    ok = CliRunner().invoke(
        main,
        [
            str(artifact),
            "-i",
            str(image),
            "-o",
            str(out),
            "--steps",
            "1",
            "--backend",
            "onnxruntime",
            "--max-memory",
            "64GiB",
            "-q",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert out.is_file()
    bad = CliRunner().invoke(
        main, [str(artifact), "-i", str(image), "-o", str(out), "--max-memory", "lots"]
    )
    assert bad.exit_code == 2 and "memory size 'lots'" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_plan_is_within_30_percent_of_measured_peak_rss_on_the_tiny_preset(tmp_path, backend):
    """Export the tiny preset's ONNX graphs (random weights), run one video in a fresh
    process that records each stage's VmHWM, and compare with the plan (the backend's own
    calibration, not a borrowed one)."""
    pytest.importorskip(backend)
    from svdeploy.config import load_model_config
    from svdeploy.export import export_artifact
    from svdeploy.models.convert import convert_checkpoint
    from svdeploy.models.random_weights import write_random_sgm_file

    src = write_random_sgm_file(load_model_config("tiny"), tmp_path / "tiny.safetensors", seed=3)
    convert_checkpoint(src, tmp_path / "ckpt", config="tiny", progress=False)
    artifact = tmp_path / "artifact"
    export_artifact(
        tmp_path / "ckpt",
        artifact,
        formats=("onnx",),
        decode_chunk_size=2,
        validate=False,
        progress=False,
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "svdeploy.benchmarks.memplan",
            str(artifact),
            "--backend",
            backend,
            "--steps",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["per_stage_reset"]
    assert plan_for_artifact(artifact, backend=backend).fitted_on
    assert abs(result["predicted_peak_bytes"] / result["measured_peak_bytes"] - 1) <= 0.30, result


def test_backends_without_a_calibration_borrow_one_and_say_so():
    manifest = numpy_manifest()
    lite = plan_memory(manifest, GRAPH_BYTES, "lite")
    assert lite.borrowed_from == "mindspore" and not lite.fitted_on
    assert lite.stages == plan_memory(manifest, GRAPH_BYTES, "mindspore").stages
    assert "mindspore's figures stand in" in lite.table()
    assert json.loads(lite.json_line())["calibration_borrowed_from"] == "mindspore"
    other = plan_memory(manifest, GRAPH_BYTES, "some-future-backend")
    assert other.borrowed_from == "onnxruntime"
