"""svd-bench's command line (help, errors) and the harness pieces that need no model: timing
statistics, per-process peak RSS, the GPU script's CPU side."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import numpy as np
import pytest
from click.testing import CliRunner

from svdeploy.benchmarks import gpu_svd_xt, harness
from svdeploy.benchmarks.cli import main
from svdeploy.benchmarks.harness import resolve_settings
from svdeploy.benchmarks.machine import cpu_bf16_flags
from svdeploy.benchmarks.processes import MemoryGuard, run_measured
from svdeploy.benchmarks.stats import Stats, time_repeated
from svdeploy.config import load_model_config
from svdeploy.contract import relative_error as relative_l2
from svdeploy.errors import ConfigError
from svdeploy.kernels.probe import fastest_conv


def _invoke(args):
    return CliRunner().invoke(main, args)


def test_help_explains_every_option():
    result = _invoke(["--help"])
    assert result.exit_code == 0
    for suite in ("export", "graphs", "e2e", "memory", "train", "serve"):
        assert suite in result.output
    for param in main.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help and len(param.help) > 15, param.name
            assert param.opts[0] in result.output


def test_console_script_is_wired():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from svdeploy.cli import bench_main; "
            "import sys; sys.argv = ['svd-bench', '--help']; bench_main()",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "Usage:" in out.stdout and "--peers" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["fast"], "Invalid value for '{export|graphs|e2e|memory|train|serve|all|quality}...'"),
        ([], "Missing argument"),
        (["graphs", "--peers", "diffusers,tensorrt"], "'tensorrt': expected some of"),
        (["graphs", "--formats", "tflite"], "'tflite': expected some of mindir, onnx, lite"),
        (["graphs", "--graphs", "decoder"], "'decoder': expected some of"),
        (["memory", "--memory-frames", "8,x"], "expected comma-separated integers"),
        (["memory", "--memory-chunks", "0"], "expected positive integers"),
        (["graphs", "--repeats", "0"], "0 is not in the range x>=1"),
    ],
)
def test_usage_errors(args, message):
    result = _invoke(args)
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["graphs", "--config", "no-such-preset"],
            "error: --config 'no-such-preset': neither a preset",
        ),
        (
            ["graphs", "--dtype", "bf16", "--formats", "onnx"],
            "error: --dtype bf16 with --formats onnx",
        ),
        (
            ["graphs", "--frames", "2", "--decode-chunk-size", "3"],
            "error: --decode-chunk-size 3: expected 1..2",
        ),
        (["graphs", "--height", "62"], "error: bench.height = 62: must be a positive multiple of"),
    ],
)
def test_value_errors_are_one_line(args, message, tmp_path):
    result = _invoke(args + ["--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip().startswith(message), result.output
    assert not (tmp_path / "out").exists()  # nothing ran


def test_settings_defaults_and_reduced_frames_note(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    cfg = load_model_config("mid")
    s = resolve_settings(cfg, "mid", tmp_path, conv="native")
    assert (s.frames, s.height, s.width, s.decode_chunk_size, s.steps) == (8, 256, 256, 8, 25)
    assert s.memory_frames == (8, 16, 32) and s.memory_chunks == (2, 4, 8)
    assert s.work == tmp_path / "work" and s.notes == []
    xt = resolve_settings(load_model_config("svd_xt"), "svd_xt", tmp_path, frames=4, conv="im2col")
    assert xt.notes == ["frame count reduced from the preset's 25 to 4 (--frames)"]
    with pytest.raises(ConfigError, match="--peers 'x'"):
        resolve_settings(cfg, "mid", tmp_path, peers=("x",))


CPUINFO_X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512_bf16
"""


def test_cpu_bf16_flags_parse_cpuinfo():
    assert cpu_bf16_flags(CPUINFO_X86) == ["avx512_bf16"]
    assert cpu_bf16_flags(CPUINFO_X86.replace(" avx512_bf16", "")) == []
    assert cpu_bf16_flags("processor : 0\nFeatures : fp asimd sve bf16\n") == ["bf16"]
    assert cpu_bf16_flags("processor : 0\n") is None  # no flag line: unknown, not "none"


@pytest.mark.parametrize("flags, has_bf16_peer", [([], False), (["amx_bf16"], True), (None, True)])
def test_default_peers_leave_out_emulated_bf16(tmp_path, monkeypatch, flags, has_bf16_peer):
    monkeypatch.setattr(harness, "cpu_bf16_flags", lambda: flags)
    cfg = load_model_config("tiny")
    s = resolve_settings(cfg, "tiny", tmp_path)
    assert ("diffusers-bf16" in s.peers) == has_bf16_peer
    assert ("openvino-bf16" in s.peers) == has_bf16_peer
    assert any("openvino-bf16 left out" in n for n in s.notes) == (not has_bf16_peer)
    # named peers are measured as asked, whatever the CPU
    named = resolve_settings(cfg, "tiny", tmp_path, peers=("diffusers-bf16",))
    assert named.peers == ("diffusers-bf16",)


def test_conv_setting_is_checked_and_recorded(tmp_path):
    s = resolve_settings(load_model_config("tiny"), "tiny", tmp_path, conv="im2col")
    assert s.conv == "im2col" and s.to_json()["conv"] == "im2col"
    with pytest.raises(ConfigError, match="--conv 'fft'"):
        resolve_settings(load_model_config("tiny"), "tiny", tmp_path, conv="fft")
    # auto is resolved once, to the probe's faster kernel, and said in the notes
    auto = resolve_settings(load_model_config("tiny"), "tiny", tmp_path)
    assert auto.conv == fastest_conv() in ("native", "im2col")
    assert any(n.startswith(f"--conv auto chose {auto.conv}") for n in auto.notes)


def test_stats_and_budget():
    stats = Stats([3.0, 1.0, 2.0, 4.0, 5.0])
    assert (stats.median, stats.min, stats.n) == (3.0, 1.0, 5)
    assert stats.p10 == pytest.approx(1.4) and stats.p90 == pytest.approx(4.6)
    calls = []
    timed = time_repeated(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6 and timed.n == 4
    # a budget cuts the timed runs short, but never below three
    import time

    slow = time_repeated(lambda: time.sleep(0.01), repeats=50, warmup=0, budget_s=0.001)
    assert slow.n == 3
    with pytest.raises(ValueError, match="shape"):
        relative_l2([1.0, 2.0], [1.0])
    assert relative_l2([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert relative_l2([float("nan"), 0.0], [1.0, 0.0]) == float("inf")


def test_worker_peak_rss_is_its_own(tmp_path):
    """A small worker started while this process holds a large buffer reports its own peak:
    ru_maxrss would report at least this process's size (Linux copies it across fork + exec)."""
    from svdeploy.benchmarks.processes import run_worker

    ballast = np.ones(700 * 2**20 // 8)  # 700 MiB resident in the parent
    ballast += 1
    run = run_worker("gemm", {"backend": "numpy", "n": 64, "threads": 1, "repeats": 2}, 1, 300)
    assert run.ok, run.stderr_tail
    assert run.peak_rss_wait4_bytes > 700 * 2**20  # the inherited figure
    assert run.peak_rss_bytes < 300 * 2**20  # the worker's own (VmHWM)
    assert run.result["gflops"] > 0
    del ballast


def test_child_peak_and_cpu(tmp_path):
    status, seconds, peak, polled, timed_out, cpu, killed = run_measured(
        [
            sys.executable,
            "-c",
            "import numpy as np, time; a = np.ones(400 * 2**20 // 8); a += 1; time.sleep(1)",
        ],
        None,
        120,
        tmp_path / "err.txt",
    )
    assert status == 0 and not timed_out and killed is None
    assert seconds > 1 and cpu > 0
    assert peak > 400 * 2**20 and polled > 400 * 2**20


def test_memory_guard_kills_a_worker_above_the_limit(tmp_path):
    """A worker growing past --memory-limit is stopped by svd-bench, with the reason, rather
    than left to the kernel's OOM killer."""
    code = "import numpy as np, time; a = np.ones(2**30 // 8); time.sleep(30)"
    guard = MemoryGuard(300 * 2**20)
    status, seconds, _, polled, _, _, killed = run_measured(
        [sys.executable, "-c", code], None, 120, tmp_path / "err.txt", guard
    )
    assert status != 0 and seconds < 25
    assert killed is not None and "above --memory-limit 0.29 GiB" in killed
    assert polled > 300 * 2**20


def test_child_timeout(tmp_path):
    status, seconds, _, _, timed_out, _, _ = run_measured(
        [sys.executable, "-c", "import time; time.sleep(30)"], None, 1.0, tmp_path / "err.txt"
    )
    assert timed_out and status != 0 and seconds < 20


# ---------------------------------------------------------------------------------------------
# svdeploy/benchmarks/gpu_svd_xt.py: what can run without a GPU
# ---------------------------------------------------------------------------------------------
def test_gpu_script_plan_and_options(tmp_path):
    runner = CliRunner()
    result = runner.invoke(gpu_svd_xt.main, ["--out", str(tmp_path), "--plan"])
    assert result.exit_code == 0, result.output
    assert "25 frames 576×1024, 25 steps" in result.output
    assert "svdeploy-onnxruntime-cuda, svdeploy-mindspore-gpu, diffusers-fp16" in result.output
    help_text = runner.invoke(gpu_svd_xt.main, ["--help"]).output
    for param in gpu_svd_xt.main.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help and param.opts[0] in help_text, param.name
    bad = runner.invoke(gpu_svd_xt.main, ["--out", str(tmp_path), "--peers", "tensorrt", "--plan"])
    assert bad.exit_code == 2 and "expected some of" in bad.output
    bad = runner.invoke(gpu_svd_xt.main, ["--out", str(tmp_path), "--height", "600", "--plan"])
    assert bad.exit_code == 2 and "multiples of 64" in bad.output
    bad = runner.invoke(gpu_svd_xt.main, ["--out", str(tmp_path), "--frames", "4", "--plan"])
    assert bad.exit_code == 2 and "above --frames 4" in bad.output


def test_gpu_script_without_gpu_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(
        gpu_svd_xt,
        "detect_gpu",
        lambda: {
            "nvidia_smi": None,
            "torch_cuda": False,
            "onnxruntime_providers": ["CPUExecutionProvider"],
        },
    )
    result = CliRunner().invoke(gpu_svd_xt.main, ["--out", str(tmp_path / "gpu")])
    assert result.exit_code == 2
    assert result.output.startswith("error: no NVIDIA GPU here")
    assert "CPUExecutionProvider" in result.output
    assert not (tmp_path / "gpu").exists()


def test_gpu_report_writing(tmp_path):
    plan = gpu_svd_xt.GpuPlan(out=tmp_path / "gpu", work=tmp_path / "work", repeats=2)
    results = [
        gpu_svd_xt.GpuResult(
            peer="diffusers-fp16",
            ok=True,
            video_s=[40.0, 42.0],
            step_s=[1.5, 1.6, 1.7],
            peak_gpu_bytes=30 * 2**30,
        ),
        gpu_svd_xt.GpuResult(
            peer="svdeploy-onnxruntime-cuda",
            ok=True,
            video_s=[20.0, 22.0],
            step_s=[0.7, 0.8, 0.9],
            unet_call_s=[0.6],
            parity_max_abs=2e-3,
        ),
        gpu_svd_xt.GpuResult(
            peer="svdeploy-mindspore-gpu",
            ok=False,
            reason="this MindSpore build has no GPU support",
        ),
    ]
    paths = gpu_svd_xt.write_gpu_report(plan, {"torch_device": "NVIDIA H100"}, results, "cmd")
    data = json.loads(paths[0].read_text())
    rows = {r["peer"]: r for r in data["rows"]}
    assert rows["svdeploy-onnxruntime-cuda"]["speedup_vs_diffusers_fp16"] == pytest.approx(41 / 21)
    assert rows["diffusers-fp16"]["step_median_s"] == pytest.approx(1.6)
    assert data["plan"]["frames"] == 25 and data["plan"]["steps"] == 25
    text = paths[1].read_text()
    assert "NVIDIA H100" in text and "1.95×" in text
    assert "not run: this MindSpore build has no GPU support" in text
    assert "2.0e-03" in text
    assert not any(p.name.startswith(".") for p in paths[0].parent.iterdir())  # atomic writes
