"""svd-serve as users run it: the real command on 127.0.0.1 (an ephemeral port, a local Ray),
over an ONNX artifact written here (the fake graphs of svdref.fake_artifact: the real
VideoPipeline and ONNX Runtime, milliseconds per step). One server serves the module; the
restart test starts its own. Every loop is bounded; every process started is stopped (SIGTERM,
then SIGKILL of the whole process group)."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from svdeploy.manifest import write_manifest
from svdeploy.runtime import run_to_file
from svdeploy.serve.client import ServeClient
from svdeploy.serve.launch import ServeProcess, _alive
from svdref.fake_artifact import DEFAULTS, F, H, W, export_onnx, fake_manifest

pytestmark = pytest.mark.slow

JOB_TIMEOUT = 120.0
# Steps that make a fake job last seconds (a few ms each), for progress, cancel and 429.
LONG_STEPS = 3000
MAX_QUEUE = 3
MAX_UPLOAD = 200_000
# ONNX Runtime pinned: the default choice for ONNX graphs is openvino where it is installed,
# and the byte-equality checks compare the server with svd-run on the same backend.
BACKEND = "onnxruntime"


def picture(h: int, w: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("serve") / "artifact"
    directory.mkdir()
    export_onnx(directory)
    write_manifest(fake_manifest(directory, ("onnx",)), directory)
    return directory


@pytest.fixture(scope="module")
def server(artifact, tmp_path_factory):
    jobs = tmp_path_factory.mktemp("serve-jobs") / "jobs"
    process = ServeProcess(
        artifact,
        jobs,
        [
            "--backend",
            BACKEND,
            "--replicas",
            "2",
            "--max-queue",
            str(MAX_QUEUE),
            "--max-upload",
            str(MAX_UPLOAD),
        ],
    )
    try:
        yield process, ServeClient(process.url), jobs
    finally:
        process.stop()


def reference(artifact: Path, tmp: Path, image: bytes, name: str, **options) -> bytes:
    """What svd-run writes for the same image and options."""
    source = tmp / f"{name}.png"
    source.write_bytes(image)
    out = tmp / f"{name}.{options.pop('format')}"
    run_to_file(artifact, source, out, backend=BACKEND, progress=False, **options)
    return out.read_bytes()


def test_health_and_artifact_summary(server, artifact):
    _, client, _ = server
    health = client.health()
    assert health.status == 200 and health.json()["replicas_ready"] == 2
    summary = client.request("GET", "/v1/artifact").json()
    assert (summary["num_frames"], summary["height"], summary["width"]) == (F, H, W)
    assert summary["defaults"] == DEFAULTS and summary["backend"] == BACKEND
    assert {g["name"] for g in summary["graphs"]} >= {"unet", "vae_decoder"}


def test_concurrent_jobs_equal_svd_run_for_the_same_seeds(server, artifact, tmp_path):
    _, client, _ = server
    cases = [
        dict(seed=11, format="npy"),
        dict(seed=12, format="npy", steps=5, fps=9),
        dict(seed=13, format="mp4", motion_bucket_id=30),
    ]
    images = [picture(16, 16, 1), picture(24, 40, 2), picture(16, 16, 3)]
    replies = [None] * len(cases)

    def post(i: int) -> None:
        replies[i] = client.submit(images[i], **cases[i])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOB_TIMEOUT)
    assert [r.status for r in replies] == [202] * len(cases)
    for i, (reply, case) in enumerate(zip(replies, cases)):
        job = reply.json()
        assert job["status"] == "queued" and reply.headers["location"] == f"/v1/videos/{job['id']}"
        assert job["parameters"]["seed"] == case["seed"]
        assert job["parameters"]["num_inference_steps"] == case.get(
            "steps", DEFAULTS["num_inference_steps"]
        )
        done = client.wait(job["id"], JOB_TIMEOUT)
        assert done["status"] == "succeeded" and done["progress"] == 1.0, done
        content = client.content(job["id"])
        assert content.status == 200
        assert (
            content.headers["content-type"]
            == {"npy": "application/x-npy", "mp4": "video/mp4"}[case["format"]]
        )
        assert hashlib.sha256(content.body).hexdigest() == done["sha256"]
        options = dict(case)
        if "steps" in options:
            options["num_inference_steps"] = options.pop("steps")
        assert content.body == reference(artifact, tmp_path, images[i], f"ref{i}", **options), case


def test_progress_is_reported_per_step_and_cancel_stops_a_running_job(server):
    _, client, _ = server
    job = client.submit(picture(16, 16, 5), seed=1, steps=LONG_STEPS, format="npy").json()
    deadline = time.monotonic() + JOB_TIMEOUT
    seen = []
    while time.monotonic() < deadline:
        record = client.job(job["id"]).json()
        if record["status"] == "running" and 0 < record["progress"] < 1:
            seen.append(record["progress"])
            if len(seen) >= 2 and seen[-1] > seen[0]:
                break
        assert record["status"] in ("queued", "running"), record
        time.sleep(0.05)
    assert len(seen) >= 2 and seen[-1] > seen[0], seen
    # every reported progress is a whole number of steps
    assert all(abs(p * LONG_STEPS - round(p * LONG_STEPS)) < 1e-6 for p in seen)
    assert client.content(job["id"]).status == 409

    cancelled = client.delete(job["id"])
    assert cancelled.status == 200 and cancelled.json()["status"] == "cancelled"
    record = client.wait(job["id"], 10)
    assert record["status"] == "cancelled" and record["progress"] < 1
    conflict = client.content(job["id"])
    assert conflict.status == 409 and conflict.json()["error"]["code"] == "no_content"
    # The replica stopped: two new short jobs (one per replica) finish long before the
    # cancelled one would have.
    quick = [client.submit(picture(16, 16, 6), seed=s, format="npy").json()["id"] for s in (2, 3)]
    for job_id in quick:
        assert client.wait(job_id, JOB_TIMEOUT)["status"] == "succeeded"
    time.sleep(1.0)
    assert client.job(job["id"]).json()["status"] == "cancelled"  # no late overwrite
    # DELETE of a finished job deletes it
    assert client.delete(quick[0]).json() == {"id": quick[0], "deleted": True}
    assert client.job(quick[0]).status == 404


def test_a_full_queue_answers_429_with_retry_after(server):
    _, client, _ = server
    jobs = [
        client.submit(picture(16, 16, 7), seed=s, steps=LONG_STEPS, format="npy")
        for s in range(MAX_QUEUE)
    ]
    try:
        assert [r.status for r in jobs] == [202] * MAX_QUEUE
        full = client.submit(picture(16, 16, 7), seed=99, format="npy")
        assert full.status == 429
        assert int(full.headers["retry-after"]) >= 1
        assert full.json()["error"]["code"] == "queue_full"
    finally:
        for reply in jobs:
            if reply.status == 202:
                client.delete(reply.json()["id"])
    for reply in jobs:
        assert client.wait(reply.json()["id"], 10)["status"] == "cancelled"
    accepted = client.submit(picture(16, 16, 7), seed=100, format="gif")
    assert accepted.status == 202
    assert client.wait(accepted.json()["id"], JOB_TIMEOUT)["status"] == "succeeded"
    assert client.content(accepted.json()["id"]).body[:6] == b"GIF89a"


def raw_post(client: ServeClient, parts):
    """POST a hand-made multipart body: (name, value, filename or None) per part, duplicates
    allowed."""
    boundary = "testboundary42"
    body = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += (
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return client.request(
        "POST", "/v1/videos", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )


def test_bad_requests_get_json_errors_naming_the_field_and_never_become_jobs(server):
    _, client, jobs_dir = server
    before = sorted(p.name for p in jobs_dir.iterdir())
    good = picture(16, 16, 8)
    truncated = picture(64, 64, 9)
    cases = [
        (client.submit(b"this is not an image", seed=1), 422, "invalid_image", "image"),
        (client.submit(truncated[: len(truncated) // 2]), 422, "invalid_image", "image"),
        (client.submit(good, steps="abc"), 422, "invalid_type", "steps"),
        (client.submit(good, steps=0), 422, "invalid_value", "steps"),
        (client.submit(good, motion_bucket_id=300), 422, "invalid_value", "motion_bucket_id"),
        (client.submit(good, noise_aug_strength=-1), 422, "invalid_value", "noise_aug_strength"),
        (client.submit(good, fps=1.5), 422, "invalid_type", "fps"),
        (
            client.submit(good, min_guidance_scale=5, max_guidance_scale=2),
            422,
            "invalid_value",
            "min_guidance_scale",
        ),
        (client.submit(good, format="avi"), 422, "invalid_value", "format"),
        (client.submit(good, seed="x"), 422, "invalid_type", "seed"),
        (client.submit(None, seed=1), 400, "missing_field", "image"),
        (client.submit(good, colour="blue"), 400, "unknown_field", "colour"),
        (client.submit(picture(300, 300, 10)), 413, "payload_too_large", "image"),
        (
            raw_post(
                client, [("image", good, "a.png"), ("seed", b"1", None), ("seed", b"2", None)]
            ),
            400,
            "duplicate_field",
            "seed",
        ),
        (raw_post(client, [("image", good, None)]), 422, "invalid_type", "image"),
        (
            client.request(
                "POST", "/v1/videos", b'{"image": "x"}', {"Content-Type": "application/json"}
            ),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            client.request(
                "POST", "/v1/videos", b"--broken", {"Content-Type": "multipart/form-data"}
            ),
            400,
            "invalid_body",
            None,
        ),
        (client.job("vid_" + "0" * 32), 404, "not_found", "id"),
        (client.content("vid_" + "0" * 32), 404, "not_found", "id"),
        (client.delete("nonsense"), 404, "not_found", "id"),
        (client.request("GET", "/v2/nothing"), 404, "not_found", None),
        (client.request("PUT", "/v1/videos"), 405, "method_not_allowed", None),
    ]
    for i, (reply, status, code, field) in enumerate(cases):
        assert reply.status == status, (i, reply.status, reply.body[:300])
        error = reply.json()["error"]
        assert (error["code"], error["field"]) == (code, field), (i, error)
        assert error["message"] and "Traceback" not in reply.body.decode()
    assert sorted(p.name for p in jobs_dir.iterdir()) == before


def test_kill_9_of_the_process_tree_then_restart_on_the_same_jobs_dir(artifact, tmp_path):
    jobs = tmp_path / "jobs"
    first = ServeProcess(artifact, jobs, ["--backend", BACKEND, "--replicas", "1"])
    try:
        client = ServeClient(first.url)
        finished = client.submit(picture(16, 16, 20), seed=5, format="mp4").json()["id"]
        done = client.wait(finished, JOB_TIMEOUT)
        before = client.content(finished).body
        running = client.submit(picture(16, 16, 21), seed=6, steps=LONG_STEPS, format="npy").json()[
            "id"
        ]
        queued = client.submit(picture(16, 16, 22), seed=7, format="npy").json()["id"]
        client.wait(running, JOB_TIMEOUT, until=("running",))
        assert client.job(queued).json()["status"] == "queued"
        tree = first.tree()
        assert len(tree) > 3  # the server, Ray's daemons and its workers
    finally:
        first.kill()
    assert not any(_alive(pid) for pid in tree)

    with ServeProcess(artifact, jobs, ["--backend", BACKEND, "--replicas", "1"]) as second:
        client = ServeClient(second.url)
        again = client.job(finished).json()
        assert again["status"] == "succeeded" and again["sha256"] == done["sha256"]
        assert client.content(finished).body == before
        for job_id, attempts in ((running, 2), (queued, 1)):
            record = client.wait(job_id, JOB_TIMEOUT)
            assert record["status"] == "succeeded" and record["attempts"] == attempts, record
        # the re-run job is the same video svd-run makes for its seed
        expected = reference(
            artifact,
            tmp_path,
            picture(16, 16, 21),
            "rerun",
            format="npy",
            seed=6,
            num_inference_steps=LONG_STEPS,
        )
        assert client.content(running).body == expected
