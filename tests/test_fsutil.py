"""apply_umask: published files get the permissions a plain open() would give, executables stay
executable."""

from __future__ import annotations

import json
import os
import stat

import pytest

from svdeploy.errors import OutputError
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


def test_atomic_writes_replace_whole_files_and_leave_no_temporary(tmp_path, monkeypatch):
    from svdeploy.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text

    target = tmp_path / "job.json"
    atomic_write_json(target, {"status": "queued", "progress": 0.5, "name": "vidéo"})
    assert json.loads(target.read_text(encoding="utf-8")) == {
        "status": "queued",
        "progress": 0.5,
        "name": "vidéo",
    }
    atomic_write_text(tmp_path / "a.txt", "héllo")
    assert (tmp_path / "a.txt").read_bytes() == "héllo".encode("utf-8")

    # a failure in the middle keeps the old content and leaves no temporary file behind
    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OutputError, match="disk full; nothing was written"):
        atomic_write_bytes(target, b"partial")
    assert json.loads(target.read_text(encoding="utf-8"))["status"] == "queued"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "job.json"]
