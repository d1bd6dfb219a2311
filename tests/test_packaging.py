"""The wheel holds every subpackage under ``svdeploy`` and no bare top-level ``export``,
``runtime``, ``kernels`` (a PyPI package named ``kernels`` exists), plus the presets and the
demo image; and no folder of the repository root shadows an installed distribution when Python
starts there (``make demo``, ``make test``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = (
    "models",
    "kernels",
    "export",
    "runtime",
    "train",
    "benchmarks",
    "serve",
    "configs",
    "assets",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    # Built from a copy: an in-tree build would leave build/ and svdeploy.egg-info at the root,
    # where the egg-info would shadow the installed metadata for processes started there.
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    shutil.copytree(
        ROOT / "svdeploy", src / "svdeploy", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
    for part in ("config.yaml", "weights.safetensors", "world.json", "MODEL.md"):
        assert f"svdeploy/assets/demo/{part}" in names  # `--checkpoint demo` works installed


def test_wheel_has_no_bare_top_level_packages(wheel):
    tops = {n.split("/")[0] for n in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"svdeploy"}


def test_entry_points_are_declared(wheel):
    (entry,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    text = wheel.read(entry).decode()
    for script in (
        "svd-convert",
        "svd-export",
        "svd-run",
        "svd-train",
        "svd-data",
        "svd-bench",
        "svd-serve",
    ):
        assert f"{script} = svdeploy.cli:" in text


# --- No shadowing from the repository root ------------------------------------------------------
# `python -c`, `python -m` (make demo, make test) and `python -m pytest` all put the current
# directory first on sys.path, so any importable folder at the repository root would win over an
# installed distribution of the same name. transformers 5 depends on PyPI's `kernels`, which the
# old top-level `kernels/` shadowed (transformers' hub_kernels then failed to import).

PROBE = (
    "import json, os, sys, kernels, svdeploy.kernels, svdeploy.demo; "
    "print(json.dumps({'path0': sys.path[0], 'cwd': os.getcwd(), 'kernels': kernels.__file__, "
    "'ours': svdeploy.kernels.__file__, 'demo': svdeploy.demo.__file__}))"
)


def _python_at(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # PYTHONSAFEPATH would stop Python from adding the current directory and make the check vacuous.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _inspect_origin(cwd: Path, module: str) -> Path:
    """`python -m inspect -d MODULE` started in `cwd`: the `-m` form, as `make demo` starts."""
    proc = _python_at(cwd, "-m", "inspect", "-d", module)
    assert proc.returncode == 0, f"python -m inspect -d {module} failed in {cwd}:\n{proc.stderr}"
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("Origin: ")]
    return Path(line[len("Origin: ") :]).resolve()


@pytest.fixture(scope="module")
def pypi_kernels() -> Path:
    """The folder of the installed PyPI `kernels` package (a locked test dependency)."""
    try:
        dist = metadata.distribution("kernels")
    except metadata.PackageNotFoundError:
        pytest.fail(
            "the PyPI distribution 'kernels' is not installed in this environment: it is a "
            "locked test dependency (transformers 5 requires it); install with "
            "`make install-test` (pip install -c locks/py311-linux-x86_64.txt -e '.[onnx,test]')"
        )
    init = Path(dist.locate_file("kernels/__init__.py")).resolve()
    assert init.is_file(), f"distribution 'kernels' {dist.version} has no kernels/__init__.py"
    return init.parent


def test_repository_root_has_no_importable_name_but_svdeploy():
    importable = set()
    for entry in ROOT.iterdir():
        if entry.is_dir() and (entry / "__init__.py").exists():
            importable.add(entry.name)
        elif entry.is_file() and entry.suffix in (".py", ".pyc", ".so", ".pyd"):
            importable.add(entry.name)
    assert importable == {"svdeploy"}
    # Package metadata at the root would shadow the installed svdeploy's for importlib.metadata.
    stale = sorted(p.name for p in ROOT.glob("*.egg-info")) + sorted(
        p.name for p in ROOT.glob("*.dist-info")
    )
    assert not stale, (
        f"metadata at the repository root shadows the installed one: {stale} (remove it)"
    )
    # tests/ is a plain folder (pytest's importlib mode): its helpers are the package svdref.
    assert not (ROOT / "tests" / "__init__.py").exists()


def test_c_form_from_root_imports_pypi_kernels(pypi_kernels):
    proc = _python_at(ROOT, "-c", PROBE)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert (
        seen["path0"] == "" and Path(seen["cwd"]).resolve() == ROOT
    )  # the root was searched first
    assert Path(seen["kernels"]).resolve().parent == pypi_kernels
    assert Path(seen["ours"]).resolve().parent == ROOT / "svdeploy" / "kernels"
    assert Path(seen["demo"]).resolve() == ROOT / "svdeploy" / "demo.py"


def test_m_form_from_root_imports_pypi_kernels(pypi_kernels):
    assert _inspect_origin(ROOT, "kernels").parent == pypi_kernels
    assert _inspect_origin(ROOT, "svdeploy.kernels").parent == ROOT / "svdeploy" / "kernels"


def test_transformers_hub_kernels_imports_from_root(pypi_kernels):
    # The import that failed in the issue: transformers' integration does `from kernels import ...`.
    origin = _inspect_origin(ROOT, "transformers.integrations.hub_kernels")
    assert origin.name == "hub_kernels.py"


def test_pytest_process_sees_pypi_kernels(pypi_kernels):
    # `make test` runs `python -m pytest` from the root: this very process.
    import kernels

    assert Path(kernels.__file__).resolve().parent == pypi_kernels


def test_demo_starts_from_root_as_make_demo_does():
    proc = _python_at(ROOT, "-m", "svdeploy.demo", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m svdeploy.demo" in proc.stdout
    assert _inspect_origin(ROOT, "svdeploy.demo") == ROOT / "svdeploy" / "demo.py"


@pytest.mark.parametrize("form", ["-c", "-m"])
def test_probes_detect_a_shadowing_folder(tmp_path, pypi_kernels, form):
    # Control: the same probes, started beside a folder named `kernels`, do report the shadow, so
    # the checks above could fail.
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    if form == "-c":
        proc = _python_at(tmp_path, "-c", PROBE)
        assert proc.returncode == 0, proc.stderr
        found = Path(json.loads(proc.stdout)["kernels"]).resolve().parent
    else:
        found = _inspect_origin(tmp_path, "kernels").parent
    assert found == (tmp_path / "kernels").resolve() != pypi_kernels


# --- The committed lock -------------------------------------------------------------------------
LOCK = ROOT / "locks" / "py311-linux-x86_64.txt"


def _lock_pins() -> dict:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line or line.startswith(("#", " ")):
            continue
        name, sep, version = line.partition("==")
        assert sep and "[" not in name and ";" not in version, f"not an exact, plain pin: {line!r}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def test_lock_pins_every_requirement_within_pyproject_ranges():
    # Stale after an edit of pyproject.toml without `make lock`: then this fails, naming the
    # package.
    pins = _lock_pins()
    requirements = [Requirement(text) for text in metadata.requires("svdeploy")]
    assert {r.name for r in requirements} >= {
        "mindspore",
        "onnxruntime",
        "torch",
        "diffusers",
        "transformers",
        "openvino",
        "ray",
    }
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, (
            f"{req.name} (pyproject.toml) is not pinned in {LOCK.name}: run `make lock`"
        )
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK.name} pins {name}=={pins[name]}, outside "
            f"pyproject.toml's {req}: run `make lock`"
        )
    for tool in ("pip", "setuptools", "wheel", "kernels"):
        assert tool in pins, f"{tool} is not pinned in {LOCK.name}"


def test_lock_is_the_cpu_torch_and_machine_independent():
    pins = _lock_pins()
    assert pins["torch"].local == "cpu", pins["torch"]
    assert not [n for n in pins if n.startswith("nvidia-")]  # the CUDA build's dependencies
    text = LOCK.read_text()
    assert "autogenerated by pip-compile with Python 3.11" in text
    # Indexes come from pip's configuration, not from the lock (no machine's paths in it).
    assert not [ln for ln in text.splitlines() if ln.startswith("--")]
    assert "/opt/" not in text and str(ROOT) not in text
