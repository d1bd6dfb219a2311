"""The wheel holds every subpackage under ``svdeploy`` and no bare top-level ``export``,
``runtime``, ``kernels`` (a PyPI package named ``kernels`` exists), plus the presets and the
demo image."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("models", "kernels", "export", "runtime", "train", "benchmarks", "serve", "configs",
               "assets")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (path,) = out.glob("svdeploy-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_holds_every_subpackage(wheel):
    names = wheel.namelist()
    for sub in SUBPACKAGES:
        assert any(n.startswith(f"svdeploy/{sub}/") for n in names), sub
    for sub in ("models", "kernels", "export", "runtime", "train", "benchmarks"):
        assert f"svdeploy/{sub}/__init__.py" in names
    for preset in ("svd", "svd_xt", "tiny", "mid"):
        assert f"svdeploy/configs/{preset}.yaml" in names
    assert "svdeploy/assets/sample.png" in names


def test_wheel_has_no_bare_top_level_packages(wheel):
    tops = {n.split("/")[0] for n in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"svdeploy"}


def test_entry_points_are_declared(wheel):
    (entry,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    text = wheel.read(entry).decode()
    for script in ("svd-convert", "svd-export", "svd-run", "svd-train", "svd-data", "svd-bench",
                   "svd-serve"):
        assert f"{script} = svdeploy.cli:" in text
