"""The svd-convert command (click layer)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from svdeploy.models.cli import main
from svdref.checkpoints import EXTRA_SGM_TENSORS, write_sgm_safetensors
from svdref.diffusers_tiny import build_components


@pytest.fixture(scope="module")
def sgm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sgm_safetensors(
        build_components(seed=4), tmp_path_factory.mktemp("cli") / "svd.safetensors"
    )


def test_success_prints_a_summary(sgm_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, [str(sgm_file), "--out", str(tmp_path / "ckpt"), "--config", "tiny"]
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "(sgm, safetensors; F32 ×684)" in out
    assert "unet" in out and "424 tensors" in out and "1,299,216 parameters" in out
    assert "image_encoder" in out and "32 tensors" in out
    assert f"ignored: {len(EXTRA_SGM_TENSORS)} tensor(s)" in out
    assert "config: tiny, 4 frames, 64×64" in out
    assert f"output: {tmp_path / 'ckpt'}" in out
    assert (tmp_path / "ckpt" / "weights.safetensors").is_file()


def test_quiet_prints_nothing(sgm_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, [str(sgm_file), "--out", str(tmp_path / "ckpt"), "--config", "tiny", "--quiet"]
    )
    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == ""


def test_help_explains_every_option() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # help text is wrapped to the terminal width
    for option in ("--out", "--config", "--from", "--overwrite", "--quiet", "--help"):
        assert option in text
    for word in (
        "sgm, mindone, diffusers, svdeploy",
        "PRESET_OR_YAML",
        "svd_xt",
        "diffusers folder",
    ):
        assert word in text


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (
            ["--from", "stability"],
            "--from 'stability': expected one of sgm, mindone, diffusers, svdeploy",
        ),
        ([], "does not say which model it is: pass --config svd"),
        (["--config", "svd"], "does not fit preset 'svd'"),
        (["--config", "nonsense"], "neither a preset"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(
    sgm_file: Path, tmp_path: Path, extra, fragment
) -> None:
    args = [str(sgm_file), "--out", str(tmp_path / "ckpt")] + extra
    if "--config" not in extra and extra:
        args += ["--config", "tiny"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]
    assert not (tmp_path / "ckpt").exists()


def test_missing_source_and_existing_output(sgm_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, [str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "o"), "--config", "tiny"]
    )
    assert result.exit_code == 2 and "does not exist" in result.stderr
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x").write_text("x")
    result = CliRunner().invoke(
        main, [str(sgm_file), "--out", str(tmp_path / "o"), "--config", "tiny"]
    )
    assert result.exit_code == 2 and "pass --overwrite" in result.stderr
    result = CliRunner().invoke(
        main, [str(sgm_file), "--out", str(tmp_path / "o"), "--config", "tiny", "--overwrite"]
    )
    assert result.exit_code == 0 and not (tmp_path / "o" / "x").exists()


def test_entry_point_runs_as_a_module(sgm_file: Path, tmp_path: Path) -> None:
    """`python -m svdeploy.models.cli` (what svd-convert dispatches to) in a fresh process."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "svdeploy.models.cli",
            str(sgm_file),
            "--out",
            str(tmp_path / "ckpt"),
            "--config",
            "tiny",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "ckpt" / "config.yaml").is_file()
