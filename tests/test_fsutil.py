"""apply_umask: published files get the permissions a plain open() would give, executables stay
executable."""
from __future__ import annotations

import os
import stat

from svdeploy.fsutil import apply_umask


def test_private_temporary_files_become_readable_and_scripts_stay_executable(tmp_path):
    old = os.umask(0o022)
    try:
        folder = tmp_path / "artifact"
        folder.mkdir(mode=0o700)
        data = folder / "graph.bin"
        data.write_bytes(b"x")
        os.chmod(data, 0o600)
        script = folder / "convert.sh"
        script.write_text("#!/bin/sh\n")
        os.chmod(script, 0o700)
        apply_umask(folder)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(script).st_mode) == 0o755
