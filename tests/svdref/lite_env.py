"""The Python 3.7 + mindspore-lite 2.0.0 venv the Lite tests run against.

MindSpore Lite 2.0.0 is published only as a CPython 3.7 wheel, so the tests build a venv from
a Python 3.7 interpreter (pyenv's, or python3.7 on PATH) in ``<repo>/.venv-lite37`` (git-ignored)
and reuse it on later runs of the same checkout. pip takes the machine's own configuration
(index, find-links, certificates). The venv is built in a hidden temporary folder and
renamed into place (svdeploy.fsutil), so an interrupted build leaves no half venv. Where no
Python 3.7 exists the tests are skipped with that reason; a venv that cannot be built is a test
failure, not a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional

from svdeploy.fsutil import make_temp_dir, remove_quietly, replace_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV = REPO_ROOT / ".venv-lite37"
LITE_REQUIREMENTS = ["mindspore-lite==2.0.0", "numpy<1.22"]
NO_PYTHON37 = (
    "no Python 3.7 interpreter found (python3.7 on PATH, pyenv versions 3.7.*, "
    "SVDEPLOY_TEST_PYTHON37): mindspore-lite 2.0.0 has CPython 3.7 wheels only, so "
    "the MindSpore Lite tests cannot run on this machine"
)


def _candidates() -> List[str]:
    found = [os.environ.get("SVDEPLOY_TEST_PYTHON37", ""), shutil.which("python3.7") or ""]
    roots = [os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv")]
    for root in filter(None, roots):
        found += sorted(
            glob.glob(os.path.join(root, "versions", "3.7*", "bin", "python3.7")), reverse=True
        )
    return [p for p in found if p and os.access(p, os.X_OK)]


def find_python37() -> Optional[str]:
    for python in _candidates():
        probe = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 7)":
            return python
    return None


def _has_lite(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run(
        [str(python), "-c", "import mindspore_lite, numpy"], capture_output=True, text=True
    )
    return probe.returncode == 0


def lite_venv_python(base_python: str) -> Path:
    """``.venv-lite37/bin/python``, built (into a temporary sibling, then renamed) if missing."""
    python = VENV / "bin" / "python"
    if _has_lite(python):
        return python
    tmp = make_temp_dir(VENV, "partial")
    try:
        subprocess.run(
            [base_python, "-m", "venv", "--clear", str(tmp)],
            check=True,
            capture_output=True,
            text=True,
        )
        pip = subprocess.run(
            [str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet", *LITE_REQUIREMENTS],
            capture_output=True,
            text=True,
        )
        if pip.returncode != 0:
            raise RuntimeError(
                f"pip install {' '.join(LITE_REQUIREMENTS)} in a {base_python} "
                f"venv failed: {pip.stderr.strip()[-1500:]}"
            )
        replace_dir(tmp, VENV)  # a venv's bin/python finds its site-packages by relative path
    finally:
        remove_quietly(tmp)
    if not _has_lite(python):
        raise RuntimeError(f"{python} was built but mindspore_lite does not import in it")
    return python
