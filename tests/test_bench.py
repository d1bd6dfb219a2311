"""svd-bench suites on the tiny preset: every suite writes a report.json with its fields, a
report.md and a PNG. Few repeats and a subset of peers keep this short; no timing assertions
(the figures are checked for shape and consistency, not speed)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from svdeploy.benchmarks.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
pytest.importorskip("onnxruntime")


def _png_size(path: Path) -> tuple:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    return width, height


def _bench(args, tmp: Path) -> dict:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp / "report.json").read_text())
    markdown = (tmp / "report.md").read_text()
    for suite in report["suites"]:
        width, height = _png_size(tmp / f"{suite}.png")
        assert width > 200 and height > 200
        assert f"## {suite}" in markdown
    return report


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One work directory (weights, exports) shared by the runs below."""
    return tmp_path_factory.mktemp("bench-work")


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory, work) -> tuple:
    """e2e first: its full export also serves the graphs suite (an export holding more is
    reused)."""
    pytest.importorskip("diffusers")
    out = tmp_path_factory.mktemp("bench-out")
    args = [
        "e2e",
        "graphs",
        "memory",
        "--config",
        "tiny",
        "--out",
        str(out),
        "--work",
        str(work),
        "--peers",
        "diffusers,onnxruntime,openvino",
        "--formats",
        "onnx",
        "--graphs",
        "image_encoder,unet",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--standalone-repeats",
        "1",
        "--e2e-repeats",
        "1",
        "--steps",
        "2",
        "--memory-frames",
        "2,4",
        "--memory-chunks",
        "2",
        "--gemm-size",
        "256",
        "--quiet",
    ]
    return _bench(args, out), out


@pytest.fixture(scope="module")
def export_report(tmp_path_factory, work) -> dict:
    out = tmp_path_factory.mktemp("bench-export")
    return _bench(
        [
            "export",
            "--config",
            "tiny",
            "--out",
            str(out),
            "--work",
            str(work),
            "--formats",
            "onnx",
            "--graphs",
            "image_encoder,vae_encoder",
            "--quiet",
        ],
        out,
    )


def test_report_header(tiny_report):
    report, out = tiny_report
    assert list(report["suites"]) == ["e2e", "graphs", "memory"]
    assert report["command"].startswith("svd-bench e2e graphs memory --config tiny")
    machine = report["machine"]
    assert machine["threads"] >= 1 and machine["logical_cores"] >= 1 and machine["cpu_model"]
    assert machine["versions"]["onnxruntime"]
    settings = report["settings"]
    assert (settings["frames"], settings["height"], settings["width"]) == (4, 64, 64)
    assert settings["peers"] == ["diffusers", "onnxruntime", "openvino"]
    assert report["weights"]["source"].startswith("diffusers random init")
    peak = report["gemm_peak"]
    assert peak["n"] == 256 and peak["fp32_peak_gflops"] > 0
    assert peak["fp32_peak_library"] in ("onnxruntime", "numpy", "torch", "mindspore")
    text = (out / "report.md").read_text()
    assert "## Limits" in text and report["command"] in text


def test_export_suite(export_report):
    rows = export_report["suites"]["export"]["rows"]
    assert [(r["graph"], r["format"]) for r in rows] == [
        ("image_encoder", "onnx"),
        ("vae_encoder", "onnx"),
    ]
    for row in rows:
        assert "error" not in row, row
        assert row["bytes"] > 10_000 and row["files"] == [f"{row['graph']}.onnx"]
        assert row["peak_rss_bytes"] > row["rss_after_imports_bytes"] > 0
        assert row["wall_s"] > row["export_seconds"] > 0
        assert row["parity_max_rel_error"] < row["tolerance"]
    # the VAE encoder file holds more weights than the 2-layer, 32-wide CLIP
    assert rows[1]["bytes"] > rows[0]["bytes"]
    assert "gemm_peak" not in export_report  # only the graphs suite needs the peak


def test_graphs_suite(tiny_report):
    report, _ = tiny_report
    suite = report["suites"]["graphs"]
    rows = {(r["graph"], r["peer"]): r for r in suite["rows"]}
    assert set(rows) == {
        (g, p) for g in ("image_encoder", "unet") for p in ("diffusers", "onnxruntime", "openvino")
    }
    for (graph, peer), row in rows.items():
        assert "error" not in row and "skipped" not in row, row
        stats = row["stats"]
        assert stats["n"] == 2 and len(stats["samples_s"]) == 2
        # each peer was also timed alone; while it was timed interleaved, the other peers'
        # processes were stopped (--freeze-idle), so they used no CPU
        assert row["standalone"]["n"] == 1
        assert row["interleaved_over_standalone"] == pytest.approx(
            row["median_s"] / row["standalone_median_s"]
        )
        assert 0.0 <= row["idle_peers_cpu_per_wall"] <= 0.05, row["idle_peers_cpu_per_wall"]
        assert stats["p10_s"] <= row["median_s"] <= stats["p90_s"]
        assert row["gflops_per_s"] == pytest.approx(row["flops"] / row["median_s"] / 1e9)
        assert row["percent_of_peak"] == pytest.approx(
            100 * row["gflops_per_s"] / report["gemm_peak"]["fp32_peak_gflops"]
        )
        assert row["parity_reference"] == "diffusers"
        # same weights, same inputs: svdeploy's ONNX graph reproduces diffusers
        assert row["parity_rel_l2"] < 1e-4
        ratio = rows[(graph, "diffusers")]["median_s"] / row["median_s"]
        assert row["speedup_vs_diffusers"] == pytest.approx(ratio)
    assert rows[("unet", "diffusers")]["parity_rel_l2"] == 0.0
    unet = rows[("unet", "onnxruntime")]
    assert unet["flops_svdeploy_schedule"] < unet["flops"]


def test_e2e_suite(tiny_report):
    report, out = tiny_report
    suite = report["suites"]["e2e"]
    rows = {r["peer"]: r for r in suite["rows"]}
    assert set(rows) == {"diffusers", "svdeploy-onnxruntime", "svdeploy-openvino"}
    for row in rows.values():
        assert "error" not in row, row
        assert row["n_videos"] == 1 and row["step"]["n"] >= 1
        assert row["video_median_s"] > row["step_median_s"] > 0
        # image to frames through svdeploy's runtime reproduces diffusers' pipeline
        assert row["parity_max_abs"] < 1e-3
    assert rows["diffusers"]["parity_max_abs"] == 0.0
    assert rows["svdeploy-onnxruntime"]["step"]["n"] == 2  # every step of the video is timed
    assert rows["svdeploy-openvino"]["precision"] == "fp32"
    assert rows["svdeploy-onnxruntime"]["standalone"]["n"] == 1
    text = (out / "report.md").read_text()
    assert "s / video" in text and "standalone median" in text


def test_memory_suite(tiny_report):
    report, _ = tiny_report
    rows = report["suites"]["memory"]["rows"]
    assert {(r["peer"], r["frames"], r["chunk"]) for r in rows} == {
        (p, f, 2)
        for p in ("diffusers", "svdeploy-onnxruntime", "svdeploy-openvino")
        for f in (2, 4)
    }
    for row in rows:
        assert "error" not in row, row
        assert row["peak_rss_bytes"] >= row["rss_after_load_bytes"] > 0
        assert row["output_bytes"] == row["frames"] * 3 * 64 * 64 * 4
    # each case ran in its own process: its peak is its own, not the maximum over all the
    # cases so far (which could only grow from row to row)
    peaks = [r["peak_rss_bytes"] for r in rows]
    assert any(later < earlier for i, earlier in enumerate(peaks) for later in peaks[i + 1 :])


def test_no_diffusers_reports_the_peer_unavailable(tmp_path):
    """Without the diffusers stack the weights come from random_weights, and the diffusers
    peer is listed as unavailable with the reason instead of being dropped silently."""
    out = tmp_path / "out"
    report = _bench(
        [
            "graphs",
            "--config",
            "tiny",
            "--out",
            str(out),
            "--no-diffusers",
            "--peers",
            "diffusers,onnxruntime",
            "--formats",
            "onnx",
            "--graphs",
            "image_encoder",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--gemm-size",
            "128",
            "--quiet",
        ],
        out,
    )
    assert report["weights"]["source"].startswith("svdeploy random_weights")
    assert report["weights"]["diffusers_unavailable"] == "disabled by --no-diffusers"
    rows = {r["peer"]: r for r in report["suites"]["graphs"]["rows"]}
    assert "unavailable" in rows["diffusers"]["skipped"]
    assert rows["onnxruntime"]["n"] == 2 and "speedup_vs_diffusers" not in rows["onnxruntime"]
    assert "skipped: torch/diffusers unavailable" in (out / "report.md").read_text()
    assert "error" in report["gemm_peak"]["by_library"]["torch"]


@pytest.mark.slow
def test_graphs_suite_all_peers(tmp_path, work):
    """Every peer of the U-Net graph: diffusers fp32 / bf16, MindSpore PyNative, MindIR through
    GraphCell, svdeploy's ONNX and diffusers' own torch.onnx export."""
    pytest.importorskip("diffusers")
    out = tmp_path / "out"
    # named explicitly: without bf16 instructions the default peers leave diffusers-bf16 out
    peers = "diffusers,diffusers-bf16,ms-pynative,ms-graphcell,onnxruntime,plain-onnx"
    report = _bench(
        [
            "graphs",
            "--config",
            "tiny",
            "--out",
            str(out),
            "--work",
            str(work),
            "--peers",
            peers,
            "--graphs",
            "unet",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--gemm-size",
            "256",
            "--quiet",
        ],
        out,
    )
    rows = {r["peer"]: r for r in report["suites"]["graphs"]["rows"]}
    assert set(rows) == {
        "diffusers",
        "diffusers-bf16",
        "ms-pynative",
        "ms-graphcell",
        "onnxruntime",
        "plain-onnx",
    }
    for peer, row in rows.items():
        assert "error" not in row and "skipped" not in row, (peer, row)
        tolerance = 5e-2 if row["precision"] == "bf16" else 1e-4
        assert row["parity_rel_l2"] < tolerance, (peer, row["parity_rel_l2"])
    assert rows["diffusers-bf16"]["speedup_reference"] == "diffusers-bf16"
    assert rows["ms-graphcell"]["speedup_reference"] == "diffusers"
    assert report["gemm_peak"]["bf16_peak_gflops"] > 0
    assert rows["diffusers-bf16"]["percent_of_peak"] == pytest.approx(
        100 * rows["diffusers-bf16"]["gflops_per_s"] / report["gemm_peak"]["bf16_peak_gflops"]
    )


@pytest.mark.slow
def test_train_suite(tmp_path, work):
    pytest.importorskip("diffusers")
    out = tmp_path / "out"
    report = _bench(
        [
            "train",
            "--config",
            "tiny",
            "--out",
            str(out),
            "--work",
            str(work),
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--frames",
            "2",
            "--quiet",
        ],
        out,
    )
    rows = {r["peer"]: r for r in report["suites"]["train"]["rows"]}
    assert set(rows) == {"svdeploy", "diffusers"}
    for row in rows.values():
        assert "error" not in row, row
        assert row["n"] == 2 and row["first_step_s"] > 0 and row["compile_s"] >= 0
        assert row["setup"]["trainable_parameters"] > 0
        assert np.isfinite(row["first_loss"]) and np.isfinite(row["last_loss"])
    # temporal layers only, counted the same way on both sides
    assert (
        rows["svdeploy"]["setup"]["trainable_parameters"]
        == rows["diffusers"]["setup"]["trainable_parameters"]
    )
    assert "compile" in (out / "report.md").read_text()


@pytest.mark.slow
def test_serve_suite(tmp_path, work):
    """svd-serve under 2 clients for a few seconds: every accepted job succeeded and its download
    matched; percentiles ordered; the replica's RSS measured."""
    out = tmp_path / "out"
    report = _bench(
        [
            "serve",
            "--config",
            "tiny",
            "--out",
            str(out),
            "--work",
            str(work),
            "--formats",
            "onnx",
            "--steps",
            "2",
            "--serve-clients",
            "2",
            "--serve-seconds",
            "8",
            "--quiet",
        ],
        out,
    )
    (row,) = report["suites"]["serve"]["rows"]
    assert row["clients"] == 2 and row["accepted"] >= 2, row
    assert row["lost"] == 0 and row["succeeded"] == row["accepted"] and not row["other_errors"]
    assert row["videos_per_s"] == pytest.approx(row["succeeded"] / row["elapsed_s"])
    assert 0 < row["latency_p50_s"] <= row["latency_p90_s"] <= row["latency_p99_s"]
    assert row["replica_rss_bytes"] > 50 * 2**20
    assert "videos / s" in (out / "report.md").read_text()


def test_frozen_worker_uses_no_cpu_from_the_moment_freeze_returns():
    """freeze(True) returns only once every thread is stopped, so the CPU seconds read right
    after it are final: a peer timed next is not charged a spinning peer's last milliseconds
    (which, on a 2 ms tiny-preset call, read as several CPU seconds per second)."""
    import subprocess
    import sys
    import time

    from svdeploy.benchmarks.processes import ServedWorker

    spin = (
        "import threading\n"
        "def spin():\n    while True: pass\n"
        "for _ in range(3): threading.Thread(target=spin, daemon=True).start()\n"
        "spin()\n"
    )
    worker = object.__new__(ServedWorker)  # only the process half: no served protocol here
    worker.process = subprocess.Popen([sys.executable, "-c", spin])
    worker._rusage = None
    try:
        time.sleep(0.3)
        for _ in range(20):
            worker.freeze(False)
            time.sleep(0.01)
            worker.freeze(True)
            states = {
                (t / "stat").read_text().rsplit(")", 1)[1].split()[0]
                for t in Path(f"/proc/{worker.process.pid}/task").iterdir()
            }
            assert states == {"T"}, states
            before = worker.cpu_seconds()
            time.sleep(0.03)
            assert worker.cpu_seconds() == before
        assert worker.cpu_seconds() > 0.1  # it did spin while thawed: the reading is live
    finally:
        worker.process.kill()
        worker.process.wait()
