"""svd-serve's parts without Ray: the job store (atomic records, restart recovery, expiry, the
directory lock), the request checks (every field, the image), settings parsing."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from svdeploy.errors import BackendError, InputError, ServeError
from svdeploy.serve import JobStore, RequestError, check_image, parse_fields
from svdeploy.serve.client import encode_multipart
from svdeploy.serve.jobs import MAX_ATTEMPTS, lock_jobs_dir
from svdeploy.serve.settings import check_precision, parse_duration, parse_size
from svdeploy.serve.worker import JobCancelled, generate_video
from svdref.fake_artifact import DEFAULTS, numpy_manifest, numpy_pipeline

MANIFEST = numpy_manifest()


def png_bytes(size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((*size, 3), 120, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# job store
# ---------------------------------------------------------------------------------------------
def test_a_created_job_has_its_input_on_disk_and_a_queued_record(tmp_path):
    store = JobStore(tmp_path / "jobs")
    record = store.create({"format": "npy", "seed": 1}, b"image-bytes")
    assert record["status"] == "queued" and record["id"].startswith("vid_")
    assert store.input_path(record["id"]).read_bytes() == b"image-bytes"
    assert store.get(record["id"]) == record
    assert store.get("vid_" + "0" * 32) is None
    assert store.get("../../etc/passwd") is None  # never a path from a client string


def test_recover_reruns_queued_and_interrupted_jobs_and_fails_the_rest_with_a_reason(tmp_path):
    store = JobStore(tmp_path)
    queued = store.create({"format": "npy"}, b"a")
    running = store.create({"format": "npy"}, b"b")
    running.update(status="running", attempts=1, progress=0.5, started_at=1.0)
    store.save(running)
    crashing = store.create({"format": "npy"}, b"c")
    crashing.update(status="running", attempts=MAX_ATTEMPTS)
    store.save(crashing)
    lost_input = store.create({"format": "npy"}, b"d")
    store.input_path(lost_input["id"]).unlink()
    done = store.create({"format": "gif"}, b"e")
    done.update(status="succeeded", finished_at=2.0)
    store.save(done)
    no_result = store.create({"format": "mp4"}, b"f")
    no_result.update(status="succeeded", finished_at=2.0)
    store.save(no_result)
    store.write_result(done, b"GIF89a")
    (tmp_path / ("vid_" + "1" * 32)).mkdir()
    (tmp_path / ".job.json.tmp").write_text("half")

    rerun = store.recover()

    assert [r["id"] for r in rerun] == [queued["id"], running["id"]]
    again = store.get(running["id"])
    assert again["status"] == "queued" and again["progress"] == 0.0 and again["attempts"] == 1
    for job, reason in (
        (crashing, "stopped while this job was running"),
        (lost_input, "input image is missing"),
        (no_result, "result file is missing"),
    ):
        record = store.get(job["id"])
        assert record["status"] == "failed" and reason in record["error"], record
    assert store.get(done["id"])["status"] == "succeeded"
    assert not (tmp_path / ("vid_" + "1" * 32)).exists()  # a folder without a record
    assert (tmp_path / ".job.json.tmp").exists()  # not ours to remove


def test_expire_deletes_only_finished_jobs_older_than_keep(tmp_path):
    store = JobStore(tmp_path)
    old = store.create({"format": "npy"}, b"a")
    old.update(status="succeeded", finished_at=1000.0)
    store.save(old)
    recent = store.create({"format": "npy"}, b"b")
    recent.update(status="failed", finished_at=1900.0)
    store.save(recent)
    waiting = store.create({"format": "npy"}, b"c")  # queued jobs never expire
    assert store.expire(keep_seconds=500, now=2000.0) == [old["id"]]
    assert store.get(old["id"]) is None
    assert store.get(recent["id"]) and store.get(waiting["id"])


def test_one_jobs_directory_serves_one_server_at_a_time(tmp_path):
    held = lock_jobs_dir(tmp_path)
    with pytest.raises(ServeError, match="in use by another svd-serve"):
        lock_jobs_dir(tmp_path)
    held.close()  # the kernel drops it with the process, kill -9 included
    lock_jobs_dir(tmp_path).close()


# ---------------------------------------------------------------------------------------------
# request checks
# ---------------------------------------------------------------------------------------------
def test_fields_get_the_runtime_defaults_and_a_drawn_seed():
    job = parse_fields(MANIFEST, {"format": "GIF"})
    assert job.format == "gif" and 0 <= job.seed < 2**32
    assert job.num_inference_steps == DEFAULTS["num_inference_steps"]
    assert (job.fps, job.motion_bucket_id) == (DEFAULTS["fps"], DEFAULTS["motion_bucket_id"])
    assert job.max_guidance_scale == DEFAULTS["max_guidance_scale"]
    job = parse_fields(MANIFEST, {"seed": "42", "steps": " 4 ", "noise_aug_strength": "0.1"})
    assert (job.seed, job.num_inference_steps, job.noise_aug_strength) == (42, 4, 0.1)
    assert job.format == "mp4"


@pytest.mark.parametrize(
    "fields, status, code, field",
    [
        ({"steps": "abc"}, 422, "invalid_type", "steps"),
        ({"steps": "2.5"}, 422, "invalid_type", "steps"),
        ({"steps": "0"}, 422, "invalid_value", "steps"),
        ({"fps": "0"}, 422, "invalid_value", "fps"),
        ({"motion_bucket_id": "256"}, 422, "invalid_value", "motion_bucket_id"),
        ({"noise_aug_strength": "-0.5"}, 422, "invalid_value", "noise_aug_strength"),
        ({"noise_aug_strength": "nan"}, 422, "invalid_value", "noise_aug_strength"),
        ({"min_guidance_scale": "x"}, 422, "invalid_type", "min_guidance_scale"),
        (
            {"min_guidance_scale": "4", "max_guidance_scale": "2"},
            422,
            "invalid_value",
            "min_guidance_scale",
        ),
        ({"seed": "-1"}, 422, "invalid_value", "seed"),
        ({"seed": str(2**63)}, 422, "invalid_value", "seed"),
        ({"format": "avi"}, 422, "invalid_value", "format"),
        ({"stepz": "3"}, 400, "unknown_field", "stepz"),
    ],
)
def test_each_bad_field_is_refused_with_its_name(fields, status, code, field):
    with pytest.raises(RequestError) as caught:
        parse_fields(MANIFEST, fields)
    error = caught.value
    assert (error.status, error.code, error.field) == (status, code, field)
    assert field.split("_")[0] in str(error)
    assert error.to_json() == {"error": {"code": code, "message": str(error), "field": field}}


def test_guidance_scales_of_an_artifact_without_cfg_are_refused():
    with pytest.raises(RequestError) as caught:
        parse_fields(numpy_manifest(cfg=False), {"max_guidance_scale": "2"})
    assert caught.value.field == "max_guidance_scale" and "without classifier-free" in str(
        caught.value
    )


def test_the_image_is_decoded_fully_before_it_becomes_a_job():
    assert check_image(png_bytes((20, 30))) == {"width": 30, "height": 20, "mode": "RGB"}
    whole = png_bytes((64, 64))
    for data, message in (
        (b"", "empty"),
        (b"not an image at all", "not an image"),
        (whole[: len(whole) // 2], "truncated or damaged"),
    ):
        with pytest.raises(RequestError) as caught:
            check_image(data)
        assert caught.value.field == "image" and caught.value.status == 422
        assert message in str(caught.value) and "/tmp" not in str(caught.value)


# ---------------------------------------------------------------------------------------------
# the replica's work, settings, the client's encoding
# ---------------------------------------------------------------------------------------------
def test_generate_video_equals_the_pipeline_and_stops_when_cancelled():
    import threading

    pipe = numpy_pipeline()
    job = parse_fields(MANIFEST, {"seed": "7", "format": "npy"})
    steps = []
    data, metadata = generate_video(pipe, png_bytes(), job, on_step=lambda d, t: steps.append(d))
    frames = np.load(io.BytesIO(data))
    expected = pipe.generate(np.full((16, 16, 3), 120 / 255, np.float32), seed=7, progress=False)
    np.testing.assert_array_equal(frames, expected.frames)
    assert steps == list(range(1, DEFAULTS["num_inference_steps"] + 1))
    assert metadata["seed"] == 7 and metadata["parameters"]["fps"] == DEFAULTS["fps"]
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(JobCancelled, match="after step 1 of"):
        generate_video(pipe, png_bytes(), job, cancelled=cancelled)


def test_durations_and_sizes():
    assert parse_duration("24h") == 86400 and parse_duration("90") == 90
    assert parse_duration("1.5m") == 90 and parse_duration("7d") == 7 * 86400
    assert parse_size("20MB") == 20_000_000 and parse_size("512KiB") == 512 * 1024
    assert parse_size("100") == 100
    for bad, parse in (
        ("soon", parse_duration),
        ("3w", parse_duration),
        ("lots", parse_size),
        ("5TB", parse_size),
    ):
        with pytest.raises(InputError, match=repr(bad)):
            parse(bad)


def test_precision_is_resolved_as_svd_run_does_before_ray_starts():
    assert check_precision(MANIFEST, "onnxruntime", "fp32") == "fp32"
    assert check_precision(MANIFEST, "onnxruntime", "auto") == "fp32"
    with pytest.raises(BackendError, match="--backend openvino"):
        check_precision(MANIFEST, "onnxruntime", "bf16")
    with pytest.raises(InputError, match="'fp16' is unknown"):
        check_precision(MANIFEST, "onnxruntime", "fp16")


def test_lite_replicas_get_the_interpreter_that_svd_serve_was_given(tmp_path, monkeypatch):
    """--lite-python reaches the settings every replica loads with; without it (nor
    SVDEPLOY_LITE_PYTHON, nor mindspore_lite here) a lite artifact is refused before Ray starts."""
    import dataclasses

    from svdeploy.manifest import write_manifest
    from svdeploy.runtime import lite
    from svdeploy.serve.settings import ServeSettings, resolve_settings

    monkeypatch.delenv("SVDEPLOY_LITE_PYTHON", raising=False)
    monkeypatch.setattr(lite, "lite_importable", lambda: False)
    graphs = [
        dataclasses.replace(g, format="lite", file=g.file.replace(".onnx", ".ms"))
        for g in MANIFEST.graphs
    ]
    write_manifest(dataclasses.replace(MANIFEST, graphs=graphs), tmp_path)
    with pytest.raises(BackendError, match="lite"):
        resolve_settings(tmp_path, tmp_path / "jobs", backend="lite")
    settings = resolve_settings(
        tmp_path, tmp_path / "jobs", backend="lite", lite_python="/opt/py37/bin/python"
    )
    assert settings.backend == "lite"
    assert ServeSettings.from_json(settings.to_json()).lite_python == "/opt/py37/bin/python"


def test_multipart_encoding_round_trips_through_the_standard_parser():
    from email.parser import BytesParser

    body, content_type = encode_multipart({"seed": 3}, {"image": ("a.png", b"\x89PNG\r\n-data")})
    message = BytesParser().parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    parts = {
        p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
        for p in message.get_payload()
    }
    assert parts == {"seed": b"3", "image": b"\x89PNG\r\n-data"}
    assert json.dumps(content_type).startswith('"multipart/form-data; boundary=')


def test_serve_imports_the_runtime_only():
    """serve → runtime → core: the app and the CLI load no model, export, training or kernel
    code."""
    import subprocess
    import sys

    script = (
        "import sys, svdeploy.serve.app, svdeploy.serve.cli, svdeploy.serve.server\n"
        "bad = ('svdeploy.models', 'svdeploy.train', 'svdeploy.export', 'svdeploy.kernels',"
        " 'svdeploy.benchmarks')\n"
        "print('LOADED', sorted(m for m in sys.modules if m.startswith(bad)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout


def test_cli_help_and_one_line_errors(tmp_path):
    from click.testing import CliRunner

    from svdeploy.serve.cli import main

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for option in (
        "--replicas",
        "--address",
        "--jobs-dir",
        "--max-queue",
        "--max-upload",
        "--keep",
        "--precision",
        "--backend",
        "--lite-python",
        "SVDEPLOY_LITE_PYTHON",
    ):
        assert option in result.output
    result = CliRunner().invoke(
        main, [str(tmp_path / "missing"), "--jobs-dir", str(tmp_path / "j")]
    )
    assert result.exit_code == 2 and result.output.startswith("error: ")
    assert "is not a directory" in result.output and len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(main, [str(tmp_path), "--keep", "soon"])
    assert result.exit_code == 2 and "'soon'" in result.output
