"""Bad input, full or read-only disks and interruptions for svd-convert, svd-export and svd-data
(issue 16). Each case: exit status and a one-line `error: …` naming the value and what was
expected, and no file lost or temporary left behind."""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from svdeploy import fsutil
from svdeploy.config import load_model_config
from svdeploy.errors import ExportError
from svdeploy.export import api as export_api
from svdeploy.export.cli import main as export_cli
from svdeploy.models.cli import main as convert_cli
from svdeploy.models.convert import convert_checkpoint
from svdeploy.models.keys import sgm_parameter_shapes
from svdeploy.models.random_weights import write_random_sgm_file
from svdeploy.models.weights_io import SafetensorsFile, SafetensorsWriter
from svdeploy.train.data_cli import main as data_cli


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_random_sgm_file(
        load_model_config("tiny"),
        tmp_path_factory.mktemp("hostile_src") / "tiny.safetensors",
        seed=1,
    )


@pytest.fixture(scope="module")
def checkpoint(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile_ckpt") / "ckpt"
    convert_checkpoint(source, out, config="tiny", progress=False)
    return out


def snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def invoke(cli, *args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(result, status: int = 2) -> str:
    assert result.exit_code == status, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def with_one_nan_tensor(source: Path, target: Path) -> str:
    """A copy of a float32 safetensors file whose first tensor is all NaN; returns its name."""
    with SafetensorsFile(source) as reader:
        names = list(reader.infos)
        entries = [(n, tuple(reader.infos[n].shape), "F32") for n in names]
        with SafetensorsWriter(target, entries, metadata={"format": "pt"}) as writer:
            for i, name in enumerate(names):
                array = reader.read_float32(name)
                writer.write(name, np.full_like(array, np.nan) if i == 0 else array)
    return names[0]


# ---------------------------------------------------------------------------------------------
# 1. svd-export never replaces the checkpoint it reads (nor the current directory)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["same", "parent"])
def test_export_out_holding_the_checkpoint_is_refused(checkpoint, tmp_path, where):
    root = tmp_path / "work"
    ckpt = root / "ckpt"
    ckpt.mkdir(parents=True)
    for f in checkpoint.iterdir():
        (ckpt / f.name).write_bytes(f.read_bytes())
    before = snapshot(root)
    out = ckpt if where == "same" else root
    line = error_line(
        invoke(export_cli, "--checkpoint", ckpt, "--out", out, "--overwrite", "--quiet")
    )
    assert f"--out {str(out)!r} is or holds --checkpoint {str(ckpt)!r}" in line
    assert snapshot(root) == before


def test_convert_out_dot_is_refused_not_ebusy(source, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    line = error_line(
        invoke(convert_cli, source, "--config", "tiny", "--out", ".", "--overwrite", "--quiet")
    )
    assert "--out '.' is the current directory or holds it" in line
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt"]


# ---------------------------------------------------------------------------------------------
# 5. Disk full and read-only file systems in svd-convert and svd-export
# ---------------------------------------------------------------------------------------------
def _full_disk_writer(monkeypatch):
    real_write = SafetensorsWriter.write
    calls = []

    def write(self, name, array):
        calls.append(name)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, name, array)

    monkeypatch.setattr(SafetensorsWriter, "write", write)


def test_convert_disk_full_leaves_nothing(source, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _full_disk_writer(monkeypatch)
    line = error_line(invoke(convert_cli, source, "--config", "tiny", "--out", out, "--quiet"))
    assert f"converting into {out} failed: No space left on device (ENOSPC)" in line
    assert "nothing was written" in line
    assert list(tmp_path.iterdir()) == []


def test_convert_disk_full_keeps_the_earlier_output(source, checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("earlier conversion")
    _full_disk_writer(monkeypatch)
    line = error_line(
        invoke(convert_cli, source, "--config", "tiny", "--out", out, "--overwrite", "--quiet")
    )
    assert "No space left on device (ENOSPC)" in line and "earlier output is unchanged" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "earlier.txt").read_text() == "earlier conversion"


def _read_only_mkdtemp(monkeypatch):
    def mkdtemp(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(fsutil.tempfile, "mkdtemp", mkdtemp)


def test_convert_read_only_folder(source, tmp_path, monkeypatch):
    _read_only_mkdtemp(monkeypatch)
    line = error_line(
        invoke(convert_cli, source, "--config", "tiny", "--out", tmp_path / "o", "--quiet")
    )
    assert "cannot create the output beside" in line and "Read-only file system (EROFS)" in line
    assert list(tmp_path.iterdir()) == []


def test_export_read_only_folder(checkpoint, tmp_path, monkeypatch):
    _read_only_mkdtemp(monkeypatch)
    line = error_line(
        invoke(export_cli, "--checkpoint", checkpoint, "--out", tmp_path / "art", "--quiet")
    )
    assert "cannot create the artifact beside" in line and "Read-only file system (EROFS)" in line
    assert list(tmp_path.iterdir()) == []


def test_export_disk_full_leaves_no_partial_folder(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "art"

    def full_disk(tmp, *args, **kwargs):
        (tmp / "unet.mindir").write_bytes(b"half a graph")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp / "unet.mindir"))

    monkeypatch.setattr(export_api, "_export_into", full_disk)
    line = error_line(invoke(export_cli, "--checkpoint", checkpoint, "--out", out, "--quiet"))
    assert f"export to {str(out)!r} failed: No space left on device (ENOSPC)" in line
    assert "nothing was written" in line
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 6. Interrupted writers clean up; the next run removes what a killed one left
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_convert_interrupted_by_a_signal_cleans_up(source, tmp_path, monkeypatch, sig):
    real_write = SafetensorsWriter.write

    def write(self, name, array):
        signal.raise_signal(sig)  # this thread, at once: the handler runs before write returns
        return real_write(self, name, array)

    monkeypatch.setattr(SafetensorsWriter, "write", write)
    handler_before = signal.getsignal(sig)
    result = invoke(convert_cli, source, "--config", "tiny", "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 130 and result.stderr.strip() == "interrupted"
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(sig) == handler_before  # the CLI puts the caller's handler back


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_export_interrupted_by_a_signal_cleans_up(checkpoint, tmp_path, sig):
    out = tmp_path / "art"
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
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:  # wait for the first graph file
        partial = [p for p in tmp_path.iterdir() if p.name.startswith(".art.partial-")]
        if partial and any(partial[0].iterdir()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "export finished before it could be interrupted"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr.decode()[-2000:]
    assert stderr.decode().strip().splitlines()[-1] == "interrupted"
    assert list(tmp_path.iterdir()) == []


def test_convert_removes_and_reports_stale_temporaries(source, tmp_path):
    pid = dead_pid()
    stale_dir = tmp_path / f".out.partial-{pid}-abc"
    stale_dir.mkdir()
    (stale_dir / "weights.safetensors").write_bytes(b"half")
    stale_old = tmp_path / f".out.old-{pid}-swap"
    stale_old.mkdir()
    live = tmp_path / ".out.partial-1-busy"  # pid 1 is alive: a run in progress
    live.mkdir()
    result = invoke(convert_cli, source, "--config", "tiny", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert not stale_dir.exists() and not stale_old.exists() and live.exists()
    assert f"removed {str(stale_dir)!r}, left by an interrupted earlier run" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.partial-1-busy", "out"]


def test_export_removes_and_reports_stale_temporaries(checkpoint, tmp_path, monkeypatch):
    stale = tmp_path / f".art.partial-{dead_pid()}-xyz"
    stale.mkdir()
    (stale / "unet.onnx").write_bytes(b"half")

    def stop(*args, **kwargs):
        raise ExportError("stopped by the test after the cleanup")

    monkeypatch.setattr(export_api, "_export_into", stop)
    result = invoke(export_cli, "--checkpoint", checkpoint, "--out", tmp_path / "art")
    assert result.exit_code == 2
    assert f"removed {str(stale)!r}, left by an interrupted earlier run" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_failed_mindspore_compile_leaves_no_dump_in_the_working_directory(
    checkpoint, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    result = invoke(
        export_cli,
        "--checkpoint",
        checkpoint,
        "--out",
        tmp_path / "art",
        "--format",
        "mindir",
        "--dtype",
        "bf16",
        "--graph",
        "vae_encoder",
        "--quiet",
    )
    # a bf16 MindIR graph cannot be validated by this MindSpore on CPU (no bf16 kernels);
    # its own log lines precede ours
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: validating vae_encoder.mindir with MindSpore failed")
    )
    assert list(tmp_path.iterdir()) == []  # no rank_0/om/analyze_fail.ir, no partial folder
    assert "MS_OM_PATH" not in os.environ


# ---------------------------------------------------------------------------------------------
# 7 / 8. NaN weights and NaN rates
# ---------------------------------------------------------------------------------------------
def test_convert_refuses_nan_weights(source, tmp_path):
    bad = tmp_path / "nan.safetensors"
    name = with_one_nan_tensor(source, bad)
    line = error_line(
        invoke(convert_cli, bad, "--config", "tiny", "--out", tmp_path / "out", "--quiet")
    )
    assert f"tensor {name} holds NaN or Inf values; expected finite weights" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.safetensors"]


def test_export_names_the_nan_tensor_instead_of_an_infinite_error(checkpoint, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.yaml").write_bytes((checkpoint / "config.yaml").read_bytes())
    name = with_one_nan_tensor(checkpoint / "weights.safetensors", ckpt / "weights.safetensors")
    assert name in sgm_parameter_shapes(load_model_config("tiny"))
    line = error_line(
        invoke(export_cli, "--checkpoint", ckpt, "--out", tmp_path / "art", "--quiet")
    )
    assert f"tensor {name!r} holds NaN or Inf values; expected finite weights" in line
    assert "relative error" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_data_flow_fps_must_be_finite(tmp_path, value):
    line = error_line(
        invoke(data_cli, "motion-buckets", tmp_path, "--flow-fps", value, "--no-progress")
    )
    assert f"flow_fps = {value}: expected a finite number > 0" in line
    assert list(tmp_path.iterdir()) == []


def _swallowed_interrupt() -> None:
    """What MindSpore's compiler does with a Ctrl-C that lands in a Python callback it calls:
    the KeyboardInterrupt is caught there and the work goes on."""
    try:
        signal.raise_signal(signal.SIGINT)  # to this thread: the handler runs before it returns
        time.sleep(0.05)
    except KeyboardInterrupt:
        pass


def test_a_swallowed_interrupt_still_stops_publishing(tmp_path):
    from svdeploy.cliutil import termination_as_interrupt

    tmp, out = tmp_path / ".out.partial-1-x", tmp_path / "out"
    tmp.mkdir()
    (tmp / "graph.onnx").write_bytes(b"finished")
    with pytest.raises(KeyboardInterrupt):
        with termination_as_interrupt():
            _swallowed_interrupt()
            fsutil.replace_dir(tmp, out)
    assert not out.exists()
    single = tmp_path / "video.npy"
    with pytest.raises(KeyboardInterrupt):
        with termination_as_interrupt():
            _swallowed_interrupt()
            fsutil.atomic_write_bytes(single, b"frames")
    assert sorted(p.name for p in tmp_path.iterdir()) == [tmp.name]  # no file, no temporary
    fsutil.replace_dir(tmp, out)  # outside the CLI scope: Python's own handling, no latch
    assert (out / "graph.onnx").exists()


_LATE_SIGINT_PROGRAM = """
import atexit, os, signal, sys
import click
from svdeploy.cliutil import friendly_errors, run_program

@click.command()
@friendly_errors
def main():
    raise KeyboardInterrupt("signal 15")

def late_sigint():  # arrives while the interpreter shuts down, SIGINT at its default action
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)

atexit.register(late_sigint)
{call}
"""


@pytest.mark.parametrize("entry", ["run_program(main)", "main()"])
def test_an_interrupted_program_exits_130_even_if_sigint_arrives_at_shutdown(entry):
    """svd-export once printed "interrupted" after a SIGTERM and still died by SIGINT (−2)
    while the interpreter shut down. run_program, which the console scripts and ``python -m``
    use, ends an interrupted command at once; a bare click call shows the failure."""
    program = _LATE_SIGINT_PROGRAM.format(call=entry)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60)
    assert done.stderr.decode().strip().endswith("interrupted")
    if entry.startswith("run_program"):
        assert done.returncode == 130
    else:  # what the CLIs did before run_program: the late signal decides the status
        assert done.returncode == -signal.SIGINT


@pytest.mark.parametrize("library", ["carries on", "raises its own error"])
def test_export_with_a_swallowed_interrupt_publishes_nothing(
    checkpoint, tmp_path, monkeypatch, library
):
    """A library catches the KeyboardInterrupt and either carries on or raises its own error
    (MindSpore: RuntimeError): the CLI still ends as interrupted (130), publishing nothing."""
    real = export_api._export_graph

    def export_graph(*args, **kwargs):
        _swallowed_interrupt()
        if library == "raises its own error":
            raise RuntimeError("compile failed: KeyboardInterrupt in a Python callback")
        return real(*args, **kwargs)

    monkeypatch.setattr(export_api, "_export_graph", export_graph)
    result = invoke(
        export_cli,
        "--checkpoint",
        checkpoint,
        "--out",
        tmp_path / "art",
        "--format",
        "onnx",
        "--no-validate",
        "--quiet",
    )
    assert result.exit_code == 130, result.output
    assert result.stderr.strip().splitlines()[-1] == "interrupted"
    assert list(tmp_path.iterdir()) == []


def test_training_steps_stop_after_a_swallowed_interrupt():
    """An interrupt that MindSpore swallows inside an autoencoder step ends the stage before the
    next step (the U-Net's step loop calls the same check)."""
    from svdeploy.cliutil import termination_as_interrupt
    from svdeploy.train.autoencoder import Phase, _run_steps

    calls = []

    class StepCell:
        def __call__(self, frames, eps, weight):
            calls.append(frames.shape)
            if len(calls) == 2:
                _swallowed_interrupt()
            return _Loss()

    class _Loss:
        def asnumpy(self):
            return np.float32(0.5)

    frames = itertools.repeat(np.zeros((8, 3, 16, 16), np.float32))
    cfg = Phase("joint", steps=10, object_weight=0.0, stream=7)
    with pytest.raises(KeyboardInterrupt):
        with termination_as_interrupt():
            _run_steps(StepCell(), frames, (4, 4, 4), cfg, seed=0, progress=False)
    assert len(calls) == 2
    calls.clear()
    rows = _run_steps(StepCell(), frames, (4, 4, 4), cfg, seed=0, progress=False)
    assert len(rows) == 10  # no latch installed (library use): Python's own handling, no stop
